"""The Faust agent without a broker (``agent.test_context()``): batching, routing and ClickHouse retries.

Unit tests: the model, the sink and the output topics' ``send`` are stand-ins that record what they get.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from emostream.settings import Settings
from emostream.stream.kafka.eager_delivery import EagerDelivery
from emostream.stream.worker.app import WorkerParts, create_app
from emostream.stream.worker.review_policy import ReviewPolicy
from emostream.stream.worker.scoring import BatchScorer

SURE = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]
UNSURE = [0.2, 0.4, 0.3, 0.05, 0.03, 0.02]


class FixedModel:
    version = "v0007"
    runtime_name = "fixed"

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.array([UNSURE if "hmm" in t else SURE for t in texts], dtype=np.float32)


class FlakySink:
    """Fails the first ``failures`` writes, like a ClickHouse that is briefly down."""

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.calls, self.rows, self.dead_letters, self.reviews = failures, 0, [], [], []

    def write(self, scores: list, dead_letters: list = (), reviews: list = ()) -> None:  # type: ignore[assignment]
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("ClickHouse is down")
        self.rows += scores
        self.dead_letters += dead_letters
        self.reviews += reviews


def recording_send(sent: list) -> Any:
    async def send(key: bytes | None = None, value: Any = None, **_: Any) -> asyncio.Future:
        sent.append(value)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    return send


async def run_agent(values: list[bytes], sink: FlakySink, tmp_path: Any) -> tuple[list, list]:
    parts = WorkerParts(BatchScorer(FixedModel(), ReviewPolicy(0.6)), sink, ThreadPoolExecutor(1))  # type: ignore[arg-type]
    setup = Settings(home=tmp_path, max_batch=4, max_wait=0.05).worker_setup()
    app = create_app(setup, "localhost:9", parts, web_port=6066)
    reviews: list = []
    letters: list = []
    app.review_topic.send = recording_send(reviews)  # type: ignore[attr-defined]
    app.dead_letter_topic.send = recording_send(letters)  # type: ignore[attr-defined]
    async with app.agents["score-tweets"].test_context() as agent:
        for value in values:
            await agent.put(value)
        for _ in range(200):
            if len(sink.rows) + len(letters) >= len(values):
                break
            await asyncio.sleep(0.05)
    return reviews, letters


def test_agent_scores_batches_and_routes_reviews_and_dead_letters(tmp_path: Any) -> None:
    sink = FlakySink()
    values = [
        b'{"id": "1", "text": "great"}',
        b'{"id": "2", "text": "hmm maybe"}',
        b"{broken",
        b'{"id": "3", "text": "fine"}',
        b'{"id": "4", "text": "   "}',
        b'{"id": "5", "text": "ok"}',
    ]
    reviews, letters = asyncio.run(run_agent(values, sink, tmp_path))
    assert sorted(s.tweet_id for s in sink.rows) == ["1", "2", "3", "5"]
    assert all(s.model_version == "v0007" for s in sink.rows)
    assert [r.tweet.id for r in reviews] == ["2"]
    assert [r.tweet.id for r in sink.reviews] == ["2"]  # the review queue's row is written with the batch
    assert sorted(letter.value for letter in letters) == [b'{"id": "4", "text": "   "}', b"{broken"]
    assert sorted(letter.value for letter in sink.dead_letters) == sorted(letter.value for letter in letters)
    assert sink.calls >= 2  # max_batch=4: six records take at least two micro-batches


def test_agent_retries_clickhouse_until_it_is_back(tmp_path: Any) -> None:
    sink = FlakySink(failures=2)
    asyncio.run(run_agent([b'{"id": "1", "text": "great"}'], sink, tmp_path))
    assert sink.calls == 3
    assert [s.tweet_id for s in sink.rows] == ["1"]


def test_settings_reach_the_faust_app(tmp_path: Any) -> None:
    parts = WorkerParts(BatchScorer(FixedModel(), 0.6), FlakySink(), ThreadPoolExecutor(1))  # type: ignore[arg-type]
    setup = Settings(home=tmp_path, session_timeout=2, heartbeat_interval=0.5).worker_setup()
    app = create_app(setup, "h:1", parts, 7001)
    assert app.conf.broker_session_timeout == 2 and app.conf.producer_acks == -1
    assert issubclass(app.transport.Consumer, EagerDelivery)  # records delivered without 4 tasks each
    assert [t.get_topic_name() for t in (app.review_topic, app.dead_letter_topic)] == ["tweets.review", "tweets.dlq"]  # type: ignore[attr-defined]
