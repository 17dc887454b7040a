"""The worker's logic without a broker: validation into dead letters, scoring, review routing."""

from datetime import UTC, datetime

import numpy as np
import pytest

from emostream.schemas import LABELS, DeadLetter, Tweet
from emostream.stream.worker.review_policy import ReviewPolicy
from emostream.stream.worker.scoring import BatchScorer, RawRecord, parse_tweet

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


class PickyModel:
    """Refuses any batch holding a text with ``poison`` in it, as a tokenizer can refuse a text; NaN for ``nan``."""

    version = "v0042"

    def __init__(self, broken: bool = False) -> None:
        self.broken, self.calls = broken, 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.broken or any("poison" in t for t in texts):
            raise RuntimeError("the tokenizer cannot read this")
        return np.array([[np.nan] * 6 if t == "nan" else [0.9, 0.02, 0.02, 0.02, 0.02, 0.02] for t in texts])


def test_a_text_the_model_cannot_score_is_a_dead_letter_and_its_batch_is_scored() -> None:
    model = PickyModel()
    records = [
        record(f'{{"id": "{i}", "text": "{t}"}}'.encode(), offset=i)
        for i, t in enumerate(["a", "poison", "b", "nan", "c"])
    ]
    result = BatchScorer(model, ReviewPolicy(0.6)).score(records)  # type: ignore[arg-type]
    assert [s.tweet_id for s in result.scores] == ["0", "2", "4"]
    assert [r.offset for r in result.sources] == [0, 2, 4]
    assert sorted((d.offset, d.error) for d in result.dead_letters) == [
        (1, "the model could not score the text: RuntimeError: the tokenizer cannot read this"),
        (3, "the model could not score the text: ValueError: the model returned non-finite probabilities"),
    ]


def test_a_model_that_scores_nothing_is_an_outage_not_a_batch_of_dead_letters() -> None:
    model = PickyModel(broken=True)
    with pytest.raises(RuntimeError, match="cannot read"):
        BatchScorer(model, ReviewPolicy(0.6)).score([record(b'{"id": "1", "text": "fine"}')])  # type: ignore[arg-type]
    assert model.calls == 2  # the batch, then the plain sentence that tells a broken model from a bad text
