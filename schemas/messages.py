"""The wire format of every topic (JSON), as pydantic models shared by producers, workers and sinks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from emostream.schemas.labels import LABELS

NonBlank = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1)]
# Ids are keys (Kafka, ClickHouse's sorting key, the review page's requests): real ones are short (a
# tweet's is 19 digits, a Bluesky or Mastodon URI about 100 characters), so anything longer is refused.
TWEET_ID_MAX_CHARS = 512
TweetId = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=TWEET_ID_MAX_CHARS)]


def utc_now() -> datetime:
    """The time now, in UTC and aware: the default of every ``created_at``, ``labelled_at`` and ``failed_at``."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A ClickHouse ``DateTime64(3, 'UTC')`` value as an aware UTC time: clickhouse-connect hands them over naive."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


SHORT_FIELD_MAX_CHARS = 256  # brand, author, lang, source: names and codes, never prose


class Tweet(BaseModel):
    """A tweet to score. Unknown fields are ignored, so any producer's richer records are accepted.

    Every string must be one UTF-8 can carry: JSON may spell a lone surrogate (``"\\ud800"``), which
    Python keeps in a ``str`` but the tokenizer, ClickHouse and every JSON encoder refuse later, where the
    failure would no longer be this record's alone.
    """

    model_config = ConfigDict(extra="ignore", strict=False)

    id: TweetId = Field(description="the tweet's id; the Kafka key and the idempotency key")
    text: NonBlank = Field(
        description="the tweet's text; long texts are truncated by the model, not rejected (the record's size "
        "is bounded instead: EMOSTREAM_MAX_RECORD_BYTES)"
    )
    created_at: AwareDatetime = Field(default_factory=utc_now, description="when it was posted (with a zone)")
    brand: str | None = Field(None, max_length=SHORT_FIELD_MAX_CHARS)
    author: str | None = Field(None, max_length=SHORT_FIELD_MAX_CHARS)
    lang: str | None = Field(None, max_length=SHORT_FIELD_MAX_CHARS)
    source: str | None = Field(None, max_length=SHORT_FIELD_MAX_CHARS)

    @field_validator("id", "text", mode="before")
    @classmethod
    def _strings_only(cls, value: object) -> object:
        # pydantic's lax mode would turn 42 into "42"; a number where text belongs is a producer bug.
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        return value

    @field_validator("id", "text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _encodable(self) -> Tweet:
        # One call for all the strings: a validator per field costs each of the worker's records ~1 us more.
        for name in ("id", "text", "brand", "author", "lang", "source"):
            value = getattr(self, name)
            if value is not None and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(
                        f"{name}: holds a lone surrogate ({value[exc.start]!r}) that UTF-8 cannot carry"
                    ) from None
        return self


class EmotionScore(BaseModel):
    """One scored tweet: a row of ``emotion_scores``."""

    tweet_id: str
    brand: str = ""
    created_at: datetime
    scored_at: datetime
    model_version: str
    label: str
    confidence: float = Field(ge=0, le=1, description="probability of the top label")
    margin: float = Field(ge=0, le=1, description="top probability minus the runner-up's")
    sadness: float
    joy: float
    love: float
    anger: float
    fear: float
    surprise: float

    def probabilities(self) -> list[float]:
        """The six label probabilities in the order of :data:`~emostream.schemas.labels.LABELS`."""
        return [getattr(self, name) for name in LABELS]


REVIEW_TEXT_MAX_CHARS = 65_536  # a review record's text: at most 6 bytes a character in JSON, ~400 KB


class ReviewItem(BaseModel):
    """A tweet the model is unsure of, queued for a human label."""

    tweet: Tweet
    score: EmotionScore
    reason: str = Field(description="why it was routed, e.g. 'confidence 0.41 < 0.60'")
    text_length: int | None = Field(
        None, description="set when the record carries only the start of the text: the whole text's length"
    )
    text_sha256: str | None = Field(None, description="set with text_length: the SHA-256 of the whole text (UTF-8)")

    def bounded(self, max_chars: int = REVIEW_TEXT_MAX_CHARS) -> ReviewItem:
        """This item as the review topic carries it: a text over ``max_chars`` cut, saying what was cut.

        Kafka refuses records over the producer's ``max.request.size`` (1 MB by default), and a refused
        review record would stop the batch that holds it; ClickHouse's ``review_queue`` keeps the whole text.
        """
        text = self.tweet.text
        if len(text) <= max_chars:
            return self
        return self.model_copy(
            update={
                "tweet": self.tweet.model_copy(update={"text": text[:max_chars]}),
                "text_length": len(text),
                "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            }
        )


NO_EMOTION = "none"  # a reviewer's answer when none of the six labels fits


class ReviewLabel(BaseModel):
    """A person's label for a reviewed tweet: a row of ``review_labels`` and a record of ``tweets.labels``.

    Labels are events, never updated in place: the latest one of a tweet counts. Undoing a label is
    one more event (``retracted``, naming the label it withdraws), after which the tweet is pending
    again, so the history shows what was given, by whom, and what was taken back.
    """

    tweet_id: NonBlank
    label: str = Field(description=f"one of {', '.join(LABELS)}, or {NO_EMOTION!r} when none fits")
    reviewer: NonBlank
    labelled_at: datetime = Field(default_factory=utc_now)
    model_version: str = Field(description="the version whose doubt sent the tweet to review")
    confidence: float = Field(ge=0, le=1, description="that version's confidence in its own label")
    retracted: bool = Field(False, description="this event withdraws the reviewer's earlier `label`")

    @field_validator("label")
    @classmethod
    def _known_label(cls, value: str) -> str:
        if value not in (*LABELS, NO_EMOTION):
            raise ValueError(f"must be one of {', '.join(LABELS)} or {NO_EMOTION!r}, not {value!r}")
        return value


DEAD_LETTER_VALUE_MAX_BYTES = 16_384  # the start of a value a dead letter keeps (the rest: length and hash)
DEAD_LETTER_KEY_MAX_BYTES = 1_024
DEAD_LETTER_ERROR_MAX_CHARS = 4_096


class OversizedBytes(bytes):
    """The first bytes of a key or value that was over its limit, with the whole one's length and SHA-256.

    Made on arrival (:func:`bound_bytes`), so a flood of 1 MB records costs the worker's buffers their
    first few KiB each; it is still ``bytes``, so everything that reads a record reads this as it is.
    """

    length: int
    sha256: str

    def __new__(cls, whole: bytes, keep: int) -> OversizedBytes:
        """The first ``keep`` bytes of ``whole``, with its length and SHA-256."""
        cut = super().__new__(cls, whole[:keep])
        cut.length = len(whole)
        cut.sha256 = hashlib.sha256(whole).hexdigest()
        return cut


def bound_bytes(data: bytes | None, limit: int, keep: int) -> bytes | None:
    """``data`` as it is when it is at most ``limit`` bytes, else its first ``keep`` (an :class:`OversizedBytes`)."""
    if data is None or len(data) <= limit:
        return data
    return OversizedBytes(data, keep)


class DeadLetter(BaseModel):
    """A record that could not be used, with where it came from and why, so nothing is silently lost.

    Key and value are the raw bytes, base64 in JSON, since a bad record need not be valid UTF-8. Both
    are bounded, so a dead letter can always be produced and stored, whatever was sent: the value keeps
    its first 16 KiB, and ``value_length`` and ``value_sha256`` describe the whole of it (compare the
    hash with the producer's copy); the key keeps its first KiB and the error its first 4,096 characters.
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = Field(description="the record's raw bytes, unchanged, or their first 16 KiB")
    value_length: int | None = Field(None, description="the whole value's length in bytes (None: no value)")
    value_sha256: str | None = Field(None, description="the whole value's SHA-256, hex (None: no value)")
    error: str
    failed_at: datetime = Field(default_factory=utc_now)

    @classmethod
    def of(
        cls,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: str,
        value_length: int | None = None,
        value_sha256: str | None = None,
    ) -> DeadLetter:
        """The dead letter of a record, bounded (see the class). ``value_length``/``value_sha256``: when
        ``value`` is already only the start of the record's value (cut on arrival), what the whole was."""
        if value is not None and value_length is None:
            value_length, value_sha256 = len(value), hashlib.sha256(value).hexdigest()
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if key is None else bytes(key[:DEAD_LETTER_KEY_MAX_BYTES]),
            value=None if value is None else bytes(value[:DEAD_LETTER_VALUE_MAX_BYTES]),
            value_length=value_length,
            value_sha256=value_sha256,
            error=_storable(error),
        )

    @property
    def source_key(self) -> bytes:
        """What identifies the failed record: its topic, partition and offset. The dead-letter topic is
        keyed by it, so compaction and any consumer collapse the repeats that re-delivery sends."""
        return f"{self.topic}/{self.partition}/{self.offset}".encode()


def _storable(error: str) -> str:
    """An error message any store takes: its first 4,096 characters, a lone surrogate (an exception quoting
    text that was never valid) written as its escape, so the dead letter itself can never be refused."""
    if not error.isascii():
        error = error.encode("utf-8", "backslashreplace").decode("utf-8")
    return error if len(error) <= DEAD_LETTER_ERROR_MAX_CHARS else error[:DEAD_LETTER_ERROR_MAX_CHARS] + "..."


def describe_errors(exc: ValidationError) -> str:
    """One line naming each bad field and its problem, e.g. ``text: must not be blank; id: Field required``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
    )
