"""Which scored tweets go to human review: the review policy.

A confidence threshold sends what the model knows it does not know. On a new distribution the model is
also confidently wrong (a furious tweet scored sadness at 0.9986), and a threshold never shows people
those: a small share of the confident tweets is sent too. A per-hour budget keeps reviewers from being
flooded when a new distribution makes the model unsure of everything.

The sample is chosen by a hash of the tweet id, salted so that it is independent of the retraining
hold-out (also a hash of the id): a re-delivered tweet gets the same decision, and the sampled tweets
are not all held out.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from emostream.schemas import EmotionScore

SAMPLE_SALT = b"emostream-review-sample:"
log = logging.getLogger("emostream.worker")


def in_sample(tweet_id: str, share: float) -> bool:
    """Whether a tweet is in the review sample: a salted hash of its id, so a re-delivery gets the same answer."""
    digest = hashlib.sha256(SAMPLE_SALT + tweet_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class ReviewRouting(BaseModel):
    """Which scored tweets reach review, per worker (``EMOSTREAM_REVIEW_THRESHOLD``/``_SAMPLE``/``_BUDGET``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    review_threshold: float = Field(0.6, ge=0, le=1, description="confidence under which a tweet goes to review")
    review_sample: float = Field(
        0.2,
        ge=0,
        le=1,
        description="share of confident tweets sent to review too, chosen by a hash of the tweet id, so that "
        "confident errors reach people (a re-delivered tweet gets the same decision)",
    )
    review_budget: int = Field(1000, ge=0, description="most tweets one worker sends to review per hour (0: no limit)")


@dataclass
class ReviewPolicy:
    """``threshold``: confidence under which a tweet goes to review; ``sample``: share of the others sent
    too; ``budget``: most tweets sent per clock hour by this worker (0: no limit)."""

    threshold: float
    sample: float = 0.0
    budget: int = 0
    clock: Callable[[], float] = time.time
    _hour: int = field(default=-1, init=False)
    _sent: int = field(default=0, init=False)

    @classmethod
    def from_routing(cls, routing: ReviewRouting, clock: Callable[[], float] = time.time) -> ReviewPolicy:
        """The policy a worker runs with its configured threshold, sample and budget."""
        return cls(routing.review_threshold, routing.review_sample, routing.review_budget, clock)

    def reason(self, score: EmotionScore) -> str | None:
        """Why this tweet goes to review, or None when it does not."""
        if score.confidence < self.threshold:
            reason = f"confidence {score.confidence:.2f} < {self.threshold:.2f}"
        elif self.sample and in_sample(score.tweet_id, self.sample):
            reason = f"sample: {self.sample:.0%} of confident tweets (confidence {score.confidence:.2f})"
        else:
            return None
        return reason if self._within_budget() else None

    def _within_budget(self) -> bool:
        if not self.budget:
            return True
        hour = int(self.clock() // 3600)
        if hour != self._hour:
            self._hour, self._sent = hour, 0
        if self._sent >= self.budget:
            if self._sent == self.budget:
                log.warning(
                    "review budget of %d tweets this hour reached: no more go to review until the next", self.budget
                )
                self._sent += 1  # warn once an hour
            return False
        self._sent += 1
        return True
