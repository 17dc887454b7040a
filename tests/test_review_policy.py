"""The review policy: threshold, a hashed sample of confident tweets independent of the hold-out, a budget."""

from __future__ import annotations

from emostream.schemas import EmotionScore
from emostream.stream.worker.review_policy import ReviewPolicy, in_sample
from emostream.trainer.retrain import in_holdout
from tests.test_schemas import score as joy_score


def score(tweet_id: str, confidence: float) -> EmotionScore:
    return joy_score(confidence).model_copy(update={"tweet_id": tweet_id})


def test_the_threshold_alone_sends_only_unsure_tweets() -> None:
    policy = ReviewPolicy(threshold=0.6)
    assert policy.reason(score("a", 0.55)) == "confidence 0.55 < 0.60"
    assert policy.reason(score("b", 0.95)) is None


def test_a_share_of_confident_tweets_is_sampled_the_same_way_every_time() -> None:
    policy = ReviewPolicy(threshold=0.6, sample=0.1)
    ids = [f"t{i}" for i in range(5000)]
    sampled = [i for i in ids if policy.reason(score(i, 0.99)) is not None]
    assert 400 < len(sampled) < 600  # ~10%
    assert sampled == [i for i in ids if ReviewPolicy(threshold=0.6, sample=0.1).reason(score(i, 0.99))]
    assert policy.reason(score(sampled[0], 0.99)).startswith("sample: 10% of confident tweets")  # type: ignore[union-attr]


def test_the_sample_is_independent_of_the_retraining_hold_out() -> None:
    ids = [f"t{i}" for i in range(20000)]
    sampled = [i for i in ids if in_sample(i, 0.1)]
    held_out = sum(in_holdout(i, 0.2) for i in sampled) / len(sampled)
    assert 0.15 < held_out < 0.25  # the hold-out's share among sampled tweets is its share overall


def test_the_hourly_budget_caps_what_goes_to_review_and_resets_each_hour() -> None:
    now = [7200.0]
    policy = ReviewPolicy(threshold=0.6, budget=3, clock=lambda: now[0])
    sent = [policy.reason(score(f"t{i}", 0.3)) for i in range(5)]
    assert [r is not None for r in sent] == [True, True, True, False, False]
    now[0] += 3600
    assert policy.reason(score("t9", 0.3)) is not None
