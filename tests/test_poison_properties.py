"""Property: whatever a record's value, key and timestamp, it ends as exactly one outcome, and nothing raises.

Hypothesis draws records (any bytes; JSON tweets whose fields are any JSON, lone surrogates, control
characters and extreme times included; deep nesting; values over the size limit) and sends each batch
through what the worker does with it: parsing, the scorer with a real tokenizer and model, and the rows
written on the real engine (chDB) by the worker's own write path. Each record must then be a score row
or a dead letter (by its coordinates), never both and never neither; every dead letter and review record
must be small enough for the broker.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emostream.model.runtime import load_runtime
from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.worker.records import RawRecord
from emostream.stream.worker.review_policy import ReviewPolicy
from emostream.stream.worker.scoring import BatchScorer
from emostream.stream.worker.write_errors import Rows, write_isolating

pytestmark = pytest.mark.integration
KAFKA_MAX_REQUEST = 1_048_576
ANY_CHARACTER = st.characters(codec=None, categories=None)  # surrogates and control characters too
VERSIONS = itertools.count(1)
OFFSETS = itertools.count()

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(ANY_CHARACTER, max_size=40),
)
times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "now", ""]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
)
tweet_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(ANY_CHARACTER, max_size=30), json_leaf, st.just("i" * 600)),
        "text": st.one_of(st.text(ANY_CHARACTER, min_size=1, max_size=300), json_leaf, st.just("a" * 9000)),
        "created_at": times,
        "brand": st.one_of(st.text(ANY_CHARACTER, max_size=20), json_leaf, st.just("[/brand] \x1b]0;x\x07")),
        "author": json_leaf,
        "extra": st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=10),
    },
).map(lambda d: json.dumps(d, allow_nan=True).encode())
values = st.one_of(
    tweet_like,
    tweet_like,
    st.binary(max_size=200),
    st.integers(1, 30_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(60_000, 120_000).map(lambda n: b'{"id": "big", "text": "' + b"a" * n + b'"}'),
    st.none(),
)
timestamps = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**23), max_value=10**23).map(lambda ms: ms / 1000),
    st.just(1_764_590_400.0),
)
records = st.lists(
    st.tuples(values, st.one_of(st.none(), st.binary(max_size=2_000)), timestamps), min_size=1, max_size=6
)


@pytest.fixture(scope="module")
def worker_path(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """The scorer (real tokenizer and model) and the sink on a real engine, as the worker builds them."""
    model = load_runtime(Settings(runtime="torch-fp32"), trained_registry / "v0001")
    sink = ClickHouseSink(f"chdb://{tmp_path_factory.mktemp('poison') / 'ch'}")
    sink.apply_schema()
    yield model, sink
    sink.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=records)
def test_every_record_ends_as_exactly_one_outcome(worker_path: tuple[Any, Any], batch: list) -> None:
    model, sink = worker_path
    version = f"v{next(VERSIONS):04d}"
    scorer = BatchScorer(_Versioned(model, version), ReviewPolicy(threshold=0.5, sample=0.5))
    sent = [RawRecord("poison", 0, next(OFFSETS), key, value, ts) for value, key, ts in batch]

    result = scorer.score(sent)  # must not raise, whatever came in
    written = write_isolating(sink, Rows(result.scores, result.sources, result.reviews, result.dead_letters))

    offsets = [record.offset for record in sent]
    where = f"topic = 'poison' AND offset IN ({', '.join(map(str, offsets))})"
    lettered = {row[0] for row in sink.query(f"SELECT offset FROM dead_letters FINAL WHERE {where}")[1]}
    stored = {row[0] for row in sink.query(f"SELECT tweet_id FROM emotion_scores WHERE model_version = '{version}'")[1]}
    scored = {(s.tweet_id, source.offset) for s, source in zip(written.scores, written.sources, strict=True)}
    for record in sent:
        as_score = [tweet_id for tweet_id, offset in scored if offset == record.offset]
        outcomes = (record.offset in lettered) + bool(as_score)
        assert outcomes == 1, (record, lettered, as_score)
        assert all(tweet_id in stored for tweet_id in as_score)
    for letter in written.dead_letters:
        assert len(letter.model_dump_json()) < KAFKA_MAX_REQUEST and letter.error
    for item in written.reviews:
        assert len(item.bounded().model_dump_json()) < KAFKA_MAX_REQUEST


class _Versioned:
    """The model under another version name, so each example's rows are its own in emotion_scores."""

    def __init__(self, model: Any, version: str) -> None:
        self._model, self.version = model, version

    def predict_proba(self, texts: list[str]) -> Any:
        return self._model.predict_proba(texts)
