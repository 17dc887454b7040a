"""The wire format of every topic (JSON), as pydantic models shared by producers, workers and sinks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from schemas.labels import LABELS

NonBlank = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Tweet(BaseModel):
    """A tweet to score. Unknown fields are ignored, so any producer's richer records are accepted."""

    model_config = ConfigDict(extra="ignore", strict=False)

    id: NonBlank = Field(description="the tweet's id; the Kafka key and the idempotency key")
    text: NonBlank = Field(description="the tweet's text; long texts are truncated by the model, not rejected")
    created_at: AwareDatetime = Field(default_factory=utc_now, description="when it was posted (with a zone)")
    brand: str | None = None
    author: str | None = None
    lang: str | None = None
    source: str | None = None

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
        return [getattr(self, name) for name in LABELS]


class ReviewItem(BaseModel):
    """A tweet the model is unsure of, queued for a human label."""

    tweet: Tweet
    score: EmotionScore
    reason: str = Field(description="why it was routed, e.g. 'confidence 0.41 < 0.60'")


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


class DeadLetter(BaseModel):
    """A record that could not be used, with where it came from and why, so nothing is silently lost.

    Key and value are the raw bytes, base64 in JSON, since a bad record need not be valid UTF-8.
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = Field(description="the record's raw bytes, unchanged")
    error: str
    failed_at: datetime = Field(default_factory=utc_now)

    @property
    def source_key(self) -> bytes:
        """What identifies the failed record: its topic, partition and offset. The dead-letter topic is
        keyed by it, so compaction and any consumer collapse the repeats that re-delivery sends."""
        return f"{self.topic}/{self.partition}/{self.offset}".encode()


def describe_errors(exc: ValidationError) -> str:
    """One line naming each bad field and its problem, e.g. ``text: must not be blank; id: Field required``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
    )
