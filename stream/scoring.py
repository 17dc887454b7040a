"""From raw Kafka records to scores, review items and dead letters: the worker's logic, free of I/O.

Kept apart from the Faust agent so it can be unit-tested without a broker and run in an executor
thread (it calls the model, which blocks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from pydantic import ValidationError

from model.runtime import ScoringRuntime
from schemas import LABELS, DeadLetter, EmotionScore, ReviewItem, Tweet, describe_errors
from stream.review_policy import ReviewPolicy


class ConsumedRecord(Protocol):
    """What the scorer reads of a Kafka record: bytes and coordinates, nothing decoded yet.

    Faust's ``Message`` has exactly these attributes, so the worker hands its messages over as they are
    (a copy of each into a :class:`RawRecord` was 9% of the event loop's time, py-spy).
    """

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> float | None: ...


@dataclass(frozen=True)
class RawRecord:
    """A :class:`ConsumedRecord` of its own: for records read outside Faust, and for tests."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # seconds since the epoch, the record's Kafka timestamp


@dataclass
class BatchResult:
    scores: list[EmotionScore] = field(default_factory=list)
    reviews: list[ReviewItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    tweets: list[Tweet] = field(default_factory=list)


def parse_tweet(record: ConsumedRecord) -> Tweet | DeadLetter:
    """Validate one record; any problem becomes a dead letter that says what was wrong.

    Valid records take pydantic's own JSON parser straight from the bytes (half the time of
    ``json.loads`` + ``model_validate``, measured: 0.8 against 1.6 ms per 512 tweets); anything it
    refuses goes the slow way below, which says exactly what was wrong.
    """
    if record.value is not None:
        try:
            tweet = Tweet.model_validate_json(record.value)
        except ValueError:  # ValidationError included: the slow path names the problem
            pass
        else:
            if "created_at" not in tweet.model_fields_set and record.timestamp is not None:
                # Re-deliveries must produce identical rows: default to the record's own timestamp, not "now".
                return tweet.model_copy(update={"created_at": datetime.fromtimestamp(record.timestamp, UTC)})
            return tweet
    return _dead_letter_or_tweet(record)


def _dead_letter_or_tweet(record: ConsumedRecord) -> Tweet | DeadLetter:
    try:
        if record.value is None:
            raise ValueError("the record has no value (a tombstone)")
        payload = json.loads(record.value.decode("utf-8"))
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        if "created_at" not in payload and record.timestamp is not None:
            # Re-deliveries must produce identical rows: default to the record's own timestamp, not "now".
            payload["created_at"] = datetime.fromtimestamp(record.timestamp, UTC)
        return Tweet.model_validate(payload)
    except UnicodeDecodeError as exc:
        error = f"value is not UTF-8: {exc.reason} at byte {exc.start}"
    except json.JSONDecodeError as exc:
        error = f"value is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValidationError as exc:
        error = describe_errors(exc)
    except ValueError as exc:
        error = str(exc)
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        error=error,
    )


class BatchScorer:
    """Scores a batch with the model and routes the unsure tweets to review."""

    def __init__(self, model: ScoringRuntime, policy: ReviewPolicy | float) -> None:
        self.model = model
        self.policy = policy if isinstance(policy, ReviewPolicy) else ReviewPolicy(threshold=policy)

    def swap(self, model: ScoringRuntime) -> None:
        """Serve ``model`` from the next batch on; a batch being scored finishes with the one it started with.

        One reference assignment, atomic under the GIL: safe from the event loop while the scoring thread
        is in :meth:`score`.
        """
        self.model = model

    def score(self, records: Sequence[ConsumedRecord]) -> BatchResult:
        model = self.model  # read once: the whole batch is scored by one version, even if swap() runs meanwhile
        result = BatchResult()
        for record in records:
            parsed = parse_tweet(record)
            if isinstance(parsed, Tweet):
                result.tweets.append(parsed)
            else:
                result.dead_letters.append(parsed)
        if not result.tweets:
            return result
        probabilities = model.predict_proba([t.text for t in result.tweets])
        result.scores = make_scores(result.tweets, probabilities, model.version, datetime.now(UTC))
        for tweet, score in zip(result.tweets, result.scores, strict=True):
            if (reason := self.policy.reason(score)) is not None:
                result.reviews.append(ReviewItem(tweet=tweet, score=score, reason=reason))
        return result


def make_scores(
    tweets: Sequence[Tweet], probabilities: np.ndarray, model_version: str, scored_at: datetime
) -> list[EmotionScore]:
    """The batch's score rows, the numpy work (top, margin, label) done once for all rows (half the time of
    a row at a time, measured)."""
    ordered = np.sort(probabilities, axis=-1)
    tops = ordered[:, -1].tolist()
    margins = (ordered[:, -1] - ordered[:, -2]).tolist()
    labels = [LABELS[i] for i in probabilities.argmax(axis=-1).tolist()]
    return [
        EmotionScore(
            tweet_id=tweet.id,
            brand=tweet.brand or "",
            created_at=tweet.created_at,
            scored_at=scored_at,
            model_version=model_version,
            label=label,
            confidence=top,
            margin=margin,
            **dict(zip(LABELS, row, strict=True)),
        )
        for tweet, label, top, margin, row in zip(tweets, labels, tops, margins, probabilities.tolist(), strict=True)
    ]
