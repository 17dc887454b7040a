"""From raw Kafka records to scores, review items and dead letters: the worker's logic, free of I/O.

Kept apart from the Faust agent so it can be unit-tested without a broker and run in an executor
thread (it calls the model, which blocks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from emostream.model.runtime import ScoringRuntime
from emostream.schemas import LABELS, DeadLetter, EmotionScore, ReviewItem, Tweet
from emostream.stream.worker.isolation import failing_alone
from emostream.stream.worker.records import (
    DEFAULT_LIMITS,
    ConsumedRecord,
    RawRecord,
    RecordLimits,
    dead_letter,
    parse_tweet,
)
from emostream.stream.worker.review_policy import ReviewPolicy

__all__ = ["BatchResult", "BatchScorer", "ConsumedRecord", "RawRecord", "make_scores", "parse_tweet"]
log = logging.getLogger("emostream.worker")
CANARY = "i feel fine today"  # a text every model scores: tells a text the model cannot read from a broken model


@dataclass
class BatchResult:
    """A batch's outcomes: one score (maybe with a review item) or one dead letter per record.

    ``sources[i]`` is the record ``scores[i]`` came from, so a row ClickHouse refuses can still become
    that record's dead letter (``emostream.stream.worker.write_errors``).
    """

    scores: list[EmotionScore] = field(default_factory=list)
    reviews: list[ReviewItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    tweets: list[Tweet] = field(default_factory=list)
    sources: list[ConsumedRecord] = field(default_factory=list)


class BatchScorer:
    """Scores a batch with the model and routes the unsure tweets to review."""

    def __init__(
        self, model: ScoringRuntime, policy: ReviewPolicy | float, limits: RecordLimits = DEFAULT_LIMITS
    ) -> None:
        self.model = model
        self.policy = policy if isinstance(policy, ReviewPolicy) else ReviewPolicy(threshold=policy)
        self.limits = limits

    def swap(self, model: ScoringRuntime) -> None:
        """Serve ``model`` from the next batch on; a batch being scored finishes with the one it started with.

        One reference assignment, atomic under the GIL: safe from the event loop while the scoring thread
        is in :meth:`score`.
        """
        self.model = model

    def score(self, records: Sequence[ConsumedRecord]) -> BatchResult:
        """Each record's outcome. Raises only when the model itself fails (it cannot score even a plain
        text): that is an outage, which the pipeline retries; a text the model cannot read is its dead letter."""
        model = self.model  # read once: the whole batch is scored by one version, even if swap() runs meanwhile
        result = BatchResult()
        sources: list[ConsumedRecord] = []
        for record in records:
            parsed = parse_tweet(record, self.limits)
            if isinstance(parsed, Tweet):
                result.tweets.append(parsed)
                sources.append(record)
            else:
                result.dead_letters.append(parsed)
        if not result.tweets:
            return result
        probabilities, refused = predict_isolating(model, [t.text for t in result.tweets])
        if refused:
            for i, error in refused.items():
                result.dead_letters.append(dead_letter(sources[i], f"the model could not score the text: {error}"))
            keep = [i for i in range(len(result.tweets)) if i not in refused]
            result.tweets, sources, probabilities = (
                [result.tweets[i] for i in keep],
                [sources[i] for i in keep],
                probabilities[keep],
            )
        result.sources = sources
        result.scores = make_scores(result.tweets, probabilities, model.version, datetime.now(UTC))
        for tweet, score in zip(result.tweets, result.scores, strict=True):
            if (reason := self.policy.reason(score)) is not None:
                result.reviews.append(ReviewItem(tweet=tweet, score=score, reason=reason))
        return result


def predict_isolating(model: ScoringRuntime, texts: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
    """The model's probabilities for ``texts``, and the texts it could not score (index -> error).

    Tokenizers and models are written for text, and a text can still break one (a rare code point, a
    length no chunk expected). One such text must not stop the batch, nor the worker: when the batch
    fails, its halves are tried, down to the texts that fail alone; those are refused. Unless the model
    cannot score a plain sentence either: then nothing is about the texts, and the error is raised.
    """
    try:
        probabilities = model.predict_proba(texts)
    except Exception as exc:
        first_error: Exception | None = exc
    else:
        first_error = None
        finite = np.isfinite(probabilities).all(axis=-1)
        if finite.all():
            return probabilities, {}
    try:
        canary = model.predict_proba([CANARY])
    except Exception:
        if first_error is not None:
            raise first_error from None
        raise
    if not np.isfinite(canary).all():
        raise RuntimeError("the model returns non-finite probabilities even for a plain sentence")
    if first_error is None:  # scored, but some rows are NaN or infinite: those texts are refused
        nonfinite = {int(i): "the model returned non-finite probabilities" for i in np.flatnonzero(~finite)}
        log.warning("the model gave non-finite probabilities for %d of %d texts", len(nonfinite), len(texts))
        return probabilities, nonfinite
    probabilities = np.zeros((len(texts), len(LABELS)), dtype=np.float32)

    def attempt(indices: list[int]) -> None:
        scored = model.predict_proba([texts[i] for i in indices])
        if not np.isfinite(scored).all():
            raise ValueError("the model returned non-finite probabilities")
        probabilities[indices] = scored

    failed = failing_alone(range(len(texts)), attempt)
    refused = {i: f"{type(exc).__name__}: {exc}" for i, exc in failed.items()}
    log.warning(
        "the model refused %d of %d texts in a batch: %s", len(refused), len(texts), next(iter(refused.values()), "")
    )
    return probabilities, refused


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
