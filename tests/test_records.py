"""Hostile records: each one ends as exactly one outcome, a tweet or a dead letter that says why, never an error."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from emostream.schemas import DeadLetter, ReviewItem, Tweet
from emostream.schemas.messages import (
    DEAD_LETTER_VALUE_MAX_BYTES,
    REVIEW_TEXT_MAX_CHARS,
    OversizedBytes,
    bound_bytes,
)
from emostream.stream.kafka.bounded_consumer import BoundedRecords
from emostream.stream.worker.records import RawRecord, RecordLimits, parse_tweet
from tests.test_schemas import score

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()  # the records' Kafka time, in seconds


def record(value: bytes | None, timestamp: float | None = NOW, key: bytes | None = b"k") -> RawRecord:
    return RawRecord("tweets", 1, 7, key, value, timestamp)


def tweet(**fields: object) -> bytes:
    return json.dumps({"id": "t1", "text": "i feel great", **fields}).encode()


HOSTILE = [
    ("deep arrays", b"[" * 30_000 + b"]" * 30_000, NOW, "nested too deeply"),
    (
        "deep object in an ignored field",
        b'{"id": "x", "text": "y", "e": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
        NOW,
        "nested",
    ),
    ("no created_at, record time 10^17 ms", tweet(), 1e14, "not a usable time"),
    ("no created_at, record time 10^23 ms", tweet(), 1e20, "not a usable time"),
    ("no created_at, record time before 1970", tweet(), -0.005, "not a usable time"),
    ("no created_at, record time NaN", tweet(), float("nan"), "not a usable time"),
    ("no created_at, no record time", tweet(), None, "not a usable time"),
    ("year 1 with an offset", tweet(created_at="0001-01-01T00:00:00+01:00"), NOW, "is outside"),
    ("year 1900", tweet(created_at="1900-01-01T00:00:00Z"), NOW, "is outside"),
    ("year 9999", tweet(created_at="9999-12-31T23:59:59Z"), NOW, "is outside"),
    ("epoch zero", tweet(created_at=0), NOW, "is outside"),
    ("two days after the record", tweet(created_at="2026-12-03T12:00:01Z"), NOW, "is outside"),
    ("a unix time past 9999", tweet(created_at=1e300), NOW, "created_at"),
    ("NaN created_at", b'{"id": "t1", "text": "x", "created_at": NaN}', NOW, "created_at"),
    ("a lone surrogate", b'{"id": "t1", "text": "a \\ud800 b"}', NOW, "text"),
    ("an id of 100 KB", tweet(id="i" * 600), NOW, "id: String should have at most 512 characters"),
    ("a 1 KB brand", tweet(brand="b" * 1000), NOW, "brand"),
    ("a value over the limit", tweet(text="a" * 70_000), NOW, "over the 65,536-byte limit"),
    ("760 KB that is not JSON", b"x" * 760_000, NOW, "over the 65,536-byte limit"),
    ("a tombstone", None, NOW, "tombstone"),
]


@pytest.mark.parametrize(("value", "timestamp", "reason"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_record_is_a_dead_letter_that_says_why(
    value: bytes | None, timestamp: float | None, reason: str
) -> None:
    letter = parse_tweet(record(value, timestamp))
    assert isinstance(letter, DeadLetter), letter
    assert reason in letter.error
    assert parse_tweet(record(value, timestamp)).model_dump(exclude={"failed_at"}) == letter.model_dump(
        exclude={"failed_at"}
    )  # the same decision on re-delivery
    assert len(letter.model_dump_json()) < 100_000  # always small enough to produce and store


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        ("1990-01-01T00:00:00Z", datetime(1990, 1, 1, tzinfo=UTC)),  # the window's first instant
        ("2026-12-02T12:00:00Z", datetime(2026, 12, 2, 12, tzinfo=UTC)),  # a day after the record: the last
        ("2026-12-01T13:00:00+14:00", datetime(2026, 11, 30, 23, tzinfo=UTC)),  # far offsets are the same instant
        (1_764_590_400, datetime(2025, 12, 1, 12, tzinfo=UTC)),  # unix seconds
    ],
)
def test_times_inside_the_window_are_kept(created_at: object, expected: datetime) -> None:
    parsed = parse_tweet(record(tweet(created_at=created_at)))
    assert isinstance(parsed, Tweet) and parsed.created_at == expected


def test_a_tweet_without_created_at_takes_its_record_time_and_the_window_is_a_setting() -> None:
    parsed = parse_tweet(record(tweet(), timestamp=NOW))
    assert isinstance(parsed, Tweet) and parsed.created_at.timestamp() == NOW
    old = tweet(created_at="1985-06-01T00:00:00Z")
    assert isinstance(parse_tweet(record(old)), DeadLetter)
    assert isinstance(
        parse_tweet(record(old), RecordLimits(created_at_earliest=datetime(1980, 1, 1, tzinfo=UTC))), Tweet
    )
    ahead = tweet(created_at="2026-12-01T12:30:00Z")
    assert isinstance(parse_tweet(record(ahead), RecordLimits(created_at_max_ahead=3600)), Tweet)
    assert isinstance(parse_tweet(record(ahead), RecordLimits(created_at_max_ahead=60)), DeadLetter)


def test_a_dead_letter_keeps_the_start_of_a_large_value_with_its_whole_length_and_hash() -> None:
    value = b"\xff" + b"x" * 50_000
    letter = parse_tweet(record(value, key=b"k" * 5000), RecordLimits(max_record_bytes=100_000))
    assert isinstance(letter, DeadLetter) and "not UTF-8" in letter.error
    assert letter.value == value[:DEAD_LETTER_VALUE_MAX_BYTES]
    assert (letter.value_length, letter.value_sha256) == (len(value), hashlib.sha256(value).hexdigest())
    assert letter.key == b"k" * 1024


def test_a_value_cut_on_arrival_still_names_the_whole_one() -> None:
    whole = json.dumps({"id": "big", "text": "a" * 900_000}).encode()
    cut = bound_bytes(whole, limit=65_536, keep=DEAD_LETTER_VALUE_MAX_BYTES)
    assert isinstance(cut, OversizedBytes) and len(cut) == DEAD_LETTER_VALUE_MAX_BYTES
    assert bound_bytes(b"small", limit=65_536, keep=10) == b"small"
    letter = parse_tweet(record(cut))
    assert isinstance(letter, DeadLetter) and f"{len(whole):,} bytes, over the 65,536-byte limit" in letter.error
    assert (letter.value_length, letter.value_sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert letter.value == whole[:DEAD_LETTER_VALUE_MAX_BYTES]


def test_the_consumer_cuts_large_values_and_keys_as_faust_makes_messages() -> None:
    class FaustConsumer:  # stands for faust's aiokafka Consumer: its _to_message builds the Message
        def _to_message(self, tp: object, record: SimpleNamespace) -> SimpleNamespace:
            return SimpleNamespace(**vars(record))

    class Consumer(BoundedRecords, FaustConsumer):
        max_record_bytes = 1_000

    big = SimpleNamespace(key=b"k" * 2_000, value=b"v" * 5_000)
    message = Consumer()._to_message(None, big)
    assert isinstance(message.value, OversizedBytes) and message.value.length == 5_000  # type: ignore[union-attr]
    assert isinstance(message.key, OversizedBytes) and len(message.key) == 1_024
    small = SimpleNamespace(key=b"k", value=b"v" * 1_000)
    assert Consumer()._to_message(None, small).value == b"v" * 1_000


def test_a_review_record_with_a_long_text_carries_its_start_and_says_what_was_cut() -> None:
    text = "é" * (REVIEW_TEXT_MAX_CHARS + 10)
    item = ReviewItem(tweet=Tweet(id="r", text=text), score=score(0.4), reason="confidence 0.10 < 0.60")
    bounded = item.bounded()
    assert len(bounded.tweet.text) == REVIEW_TEXT_MAX_CHARS and bounded.text_length == len(text)
    assert bounded.text_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert len(bounded.model_dump_json()) < 1_000_000  # under the producer's max.request.size
    short = item.model_copy(update={"tweet": Tweet(id="r", text="short")})
    assert short.bounded() is short


def test_a_dead_letter_error_quoting_a_lone_surrogate_can_still_be_stored_and_sent() -> None:
    letter = DeadLetter.of("tweets", 0, 1, None, b"x", "the model could not score 'a \ud800 b'" + "!" * 5000)
    assert letter.error.encode("utf-8") and "\\ud800" in letter.error and len(letter.error) == 4096 + 3
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
