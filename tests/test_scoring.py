"""The worker's logic without a broker: validation into dead letters, scoring, review routing."""

from datetime import UTC, datetime

import numpy as np
import pytest

from schemas import LABELS, DeadLetter, Tweet
from stream.review_policy import ReviewPolicy
from stream.scoring import BatchScorer, RawRecord, parse_tweet

MALFORMED = [
    (b"not json", "not JSON"),
    (b"{}", "id: Field required"),
    (b'{"id": 5}', "id: must be a string"),
    (b'{"id": "x1"}', "text: Field required"),
    (b'{"text": "no id"}', "id: Field required"),
    (b"\xff\xfe\xfa", "not UTF-8"),
    (b'{"id": "x2", "text": ""}', "text"),
    (b'{"id": "x3", "text": 42}', "text: must be a string"),
    (b"[1,2,3]", "expected a JSON object, got list"),
    (b'{"id": null, "text": "a"}', "id: Input should be a valid string"),
    (None, "tombstone"),
]


def record(value: bytes | None, offset: int = 0, timestamp: float | None = 1_700_000_000.0) -> RawRecord:
    return RawRecord("tweets", 2, offset, b"key", value, timestamp)


@pytest.mark.parametrize(("value", "reason"), MALFORMED)
def test_malformed_records_become_dead_letters_with_a_reason(value: bytes | None, reason: str) -> None:
    letter = parse_tweet(record(value, offset=41))
    assert isinstance(letter, DeadLetter)
    assert reason in letter.error
    assert (letter.topic, letter.partition, letter.offset, letter.value, letter.key) == ("tweets", 2, 41, value, b"key")


def test_missing_created_at_defaults_to_the_record_timestamp_so_redeliveries_match() -> None:
    first = parse_tweet(record(b'{"id": "a", "text": "hi"}'))
    again = parse_tweet(record(b'{"id": "a", "text": "hi"}'))
    assert isinstance(first, Tweet) and first == again
    assert first.created_at == datetime.fromtimestamp(1_700_000_000, UTC)


class FixedModel:
    """Unit-test stand-in for EmotionModel: returns the probabilities it is given, per text."""

    version = "v0042"

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def test_batch_scores_routes_unsure_tweets_and_dead_letters() -> None:
    sure, unsure = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02], [0.1, 0.45, 0.35, 0.05, 0.03, 0.02]
    scorer = BatchScorer(FixedModel({"sure": sure, "unsure": unsure}), ReviewPolicy(0.6))  # type: ignore[arg-type]
    result = scorer.score(
        [
            record(b'{"id": "1", "text": "sure", "brand": "acme"}', 0),
            record(b"oops", 1),
            record(b'{"id": "2", "text": "unsure"}', 2),
        ]
    )
    assert [s.tweet_id for s in result.scores] == ["1", "2"]
    first, second = result.scores
    assert (first.label, first.model_version, first.brand) == ("sadness", "v0042", "acme")
    assert first.confidence == pytest.approx(0.9) and first.margin == pytest.approx(0.88)
    assert second.label == "joy" and second.margin == pytest.approx(0.10)
    assert [getattr(second, name) for name in LABELS] == pytest.approx(unsure)
    assert [r.tweet.id for r in result.reviews] == ["2"]
    assert result.reviews[0].reason == "confidence 0.45 < 0.60"
    assert [d.offset for d in result.dead_letters] == [1]
