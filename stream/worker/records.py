"""From a Kafka record's bytes to a tweet or a dead letter: every record gets exactly one of the two.

A record on the topic is hostile until checked: anything a producer can send (any bytes, any size,
any key, any Kafka timestamp) must end as a :class:`~emostream.schemas.Tweet` to score or a
:class:`~emostream.schemas.DeadLetter` that says why, never as an exception that stops the worker. The checks,
in order:

1. a value (a tombstone has none);
2. its size: at most ``max_record_bytes`` (``EMOSTREAM_MAX_RECORD_BYTES``). Larger values are cut on
   arrival (:func:`~emostream.schemas.messages.bound_bytes`, in the consumer), so the buffers hold their
   first bytes only;
3. a JSON object that :class:`~emostream.schemas.Tweet` accepts (UTF-8, not nested too deeply, strings UTF-8
   can carry, ids and names of bounded length);
4. a time: ``created_at``, or the record's Kafka timestamp where the tweet has none, inside the window
   of :class:`RecordLimits`. The window is judged against the record itself (never the clock), so a
   re-delivered record gets the same answer, and the row it makes is the same row.

Whatever else goes wrong in these functions is about this record's bytes too, and becomes its dead
letter, with the exception named.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from emostream.schemas import DeadLetter, Tweet, describe_errors
from emostream.schemas.messages import OversizedBytes

LATEST_RECORD_TIME = datetime(2200, 1, 1, tzinfo=UTC)  # later Kafka timestamps are garbage, not times


class ConsumedRecord(Protocol):
    """What the scorer reads of a Kafka record: bytes and coordinates, nothing decoded yet.

    Faust's ``Message`` has exactly these attributes, so the worker hands its messages over as they are
    (a copy of each into a :class:`RawRecord` was 9% of the event loop's time, py-spy).
    """

    @property
    def topic(self) -> str:
        """The topic the record was read from."""

    @property
    def partition(self) -> int:
        """The partition of that topic it was read from."""

    @property
    def offset(self) -> int:
        """Its offset in that partition."""

    @property
    def key(self) -> bytes | None:
        """The key's bytes, None for no key; only the start of a key over its limit (an ``OversizedBytes``)."""

    @property
    def value(self) -> bytes | None:
        """The value's bytes, None for a tombstone; only the start of one over its limit (an ``OversizedBytes``)."""

    @property
    def timestamp(self) -> float | None:
        """The record's Kafka timestamp in seconds since the epoch, None when it has none."""


@dataclass(frozen=True)
class RawRecord:
    """A :class:`ConsumedRecord` of its own: for records read outside Faust, and for tests."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # seconds since the epoch, the record's Kafka timestamp


def whole_length(data: bytes) -> int:
    """The length in bytes of ``data`` as it was sent, also when only its start was kept (``OversizedBytes``)."""
    return data.length if isinstance(data, OversizedBytes) else len(data)


class RecordLimits(BaseModel):
    """What a record may be; anything else is a dead letter that says why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_record_bytes: int = Field(
        65_536,
        ge=1_024,
        description="largest record value (bytes) the worker scores; larger ones are dead letters. 64 KiB holds "
        "the longest posts of the big networks (a 10,000-character Reddit comment, a 25,000-character X post in "
        "1-2 byte characters) with room for their metadata, and bounds what the worker buffers",
    )
    created_at_earliest: AwareDatetime = Field(
        datetime(1990, 1, 1, tzinfo=UTC),
        description="earliest created_at accepted (and earliest usable Kafka record time); older ones are dead "
        "letters. 1990 predates every social network and refuses the epoch-0 and year-1 defaults of broken "
        "producers",
    )
    created_at_max_ahead: float = Field(
        86_400.0,
        ge=0,
        description="seconds a created_at may lie after its Kafka record's timestamp; later ones are dead letters. "
        "A day covers clock skew and a time zone written as UTC, and catches year-9999 placeholders; judged "
        "against the record, not the clock, so a re-delivered record gets the same decision",
    )

    def record_time(self, timestamp: float | None) -> datetime | None:
        """The Kafka timestamp as a time, or None when it is none (absent, not finite, or outside the window)."""
        if timestamp is None or not math.isfinite(timestamp):
            return None
        try:
            when = datetime.fromtimestamp(timestamp, UTC)
        except (OverflowError, OSError, ValueError):  # beyond what datetime holds: 10^17 ms is year 3,170,843
            return None
        return when if self.created_at_earliest <= when < LATEST_RECORD_TIME else None

    def check_created_at(self, created_at: datetime, record_time: datetime | None) -> str | None:
        """Why ``created_at`` is refused, or None when it is inside the window."""
        try:
            latest = (
                LATEST_RECORD_TIME
                if record_time is None
                else record_time + timedelta(seconds=self.created_at_max_ahead)
            )
        except OverflowError:  # a tolerance past year 9999: no upper bound to speak of
            latest = datetime.max.replace(tzinfo=UTC)
        try:
            inside = self.created_at_earliest <= created_at <= latest
        except OverflowError:  # an offset that takes it past year 1 or 9999 in UTC
            inside = False
        if inside:
            return None
        window = f"created_at: {created_at.isoformat()} is outside {self.created_at_earliest.isoformat()} .. "
        if record_time is None:
            return window + latest.isoformat()
        return (
            window + f"{self.created_at_max_ahead:g} s after the record's Kafka timestamp ({record_time.isoformat()})"
        )


DEFAULT_LIMITS = RecordLimits()


def parse_tweet(record: ConsumedRecord, limits: RecordLimits = DEFAULT_LIMITS) -> Tweet | DeadLetter:
    """Validate one record; any problem becomes a dead letter that says what was wrong. Never raises."""
    try:
        return _parse(record, limits)
    except Exception as exc:  # not foreseen below, and still about this record's bytes: its dead letter says so
        return dead_letter(record, f"the record could not be read: {type(exc).__name__}: {exc}")


def dead_letter(record: ConsumedRecord, error: str) -> DeadLetter:
    """The record's dead letter, bounded, with the whole value's length and hash even when it was cut on arrival."""
    value, key = record.value, record.key
    return DeadLetter.of(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        value=value,
        error=error,
        value_length=value.length if isinstance(value, OversizedBytes) else None,
        value_sha256=value.sha256 if isinstance(value, OversizedBytes) else None,
    )


def _parse(record: ConsumedRecord, limits: RecordLimits) -> Tweet | DeadLetter:
    value = record.value
    if value is None:
        return dead_letter(record, "the record has no value (a tombstone)")
    if (size := whole_length(value)) > limits.max_record_bytes:
        return dead_letter(
            record, f"the value is {size:,} bytes, over the {limits.max_record_bytes:,}-byte limit (max_record_bytes)"
        )
    try:
        # pydantic's own JSON parser straight from the bytes: half the time of json.loads + model_validate
        # (0.8 against 1.6 ms per 512 tweets); anything it refuses goes the slow way, which names the problem.
        tweet = Tweet.model_validate_json(value)
    except ValueError:  # ValidationError included
        parsed = _parse_slowly(record, value)
        if isinstance(parsed, DeadLetter):
            return parsed
        tweet = parsed
    return _with_time(record, tweet, limits)


def _parse_slowly(record: ConsumedRecord, value: bytes) -> Tweet | DeadLetter:
    try:
        payload = json.loads(value.decode("utf-8"))
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        return Tweet.model_validate(payload)
    except UnicodeDecodeError as exc:
        error = f"value is not UTF-8: {exc.reason} at byte {exc.start}"
    except json.JSONDecodeError as exc:
        error = f"value is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        error = "value is not a tweet: JSON nested too deeply to read"
    except ValidationError as exc:
        error = describe_errors(exc)
    except ValueError as exc:
        error = str(exc)
    return dead_letter(record, error)


def _with_time(record: ConsumedRecord, tweet: Tweet, limits: RecordLimits) -> Tweet | DeadLetter:
    """The tweet with a time inside the window: its own, or the record's where it has none."""
    record_time = limits.record_time(record.timestamp)
    if "created_at" not in tweet.model_fields_set:
        if record_time is None:
            return dead_letter(
                record,
                f"created_at: missing, and the record's Kafka timestamp ({record.timestamp!r} s) is not a usable "
                f"time (from {limits.created_at_earliest.isoformat()} on)",
            )
        # Re-deliveries must produce identical rows: the record's own timestamp, never "now".
        return tweet.model_copy(update={"created_at": record_time})
    refused = limits.check_created_at(tweet.created_at, record_time)
    return tweet if refused is None else dead_letter(record, refused)
