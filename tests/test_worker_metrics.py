"""The worker's ``/metrics`` and ``/readyz``: counters that match ClickHouse, and readiness that names what failed.

The integration test runs a real ``emostream worker`` on the session's tansu broker and the ClickHouse
engine (chDB), streams tweets and malformed records, then scrapes ``/metrics`` with the credential and
compares every counter with the rows the worker wrote. The unit tests drive the readiness checks and
the lag computation directly, without a broker.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from emostream.model.registry import ModelRegistry
from emostream.stream.kafka.broker import free_port
from emostream.stream.web.monitoring import BatchHealth, ClickHouseProbe, Readiness, WorkerMetrics, consumer_lag
from emostream.stream.worker.review_policy import in_sample
from emostream.stream.worker.scoring import BatchScorer
from tests.test_scoring import MALFORMED
from tests.test_streaming import Stack, send_raw, tweets_file

N_TWEETS = 120


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def scrape(url: str, token: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> its samples (name, labels, value), as Prometheus would parse them."""
    status, body = get(f"{url}/metrics", token)
    assert status == 200, body[:500]
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(body.decode())
    }


def value(metrics: dict[str, list[tuple[str, dict[str, str], float]]], sample: str) -> float:
    """The value of an unlabelled sample, e.g. ``emostream_records_scored_total``."""
    found = [v for samples in metrics.values() for name, labels, v in samples if name == sample and not labels]
    assert len(found) == 1, (sample, sorted(metrics))
    return found[0]


@pytest.mark.integration
def test_counters_match_clickhouse_and_readiness_holds(
    broker: str, trained_registry: Path, small_data: Path, tmp_path: Path
) -> None:
    stack = Stack(broker, trained_registry, tmp_path)
    # Review by the hashed sample alone: a known share, whatever the tiny model's confidences are.
    stack.env.update({"EMOSTREAM_REVIEW_THRESHOLD": "0", "EMOSTREAM_REVIEW_SAMPLE": "0.5"})
    sampled = sum(in_sample(f"t{i:04d}", 0.5) for i in range(N_TWEETS))
    assert 0 < sampled < N_TWEETS
    path, _ = tweets_file(small_data, tmp_path / "tweets.jsonl", N_TWEETS)
    bad = [raw for raw, _ in MALFORMED]
    try:
        worker = stack.start_worker()
        endpoint = stack.endpoint()
        for route in ("/metrics", "/readyz"):  # behind the credential like every route
            assert get(f"{endpoint.url}{route}")[0] == 401, route
            assert get(f"{endpoint.url}{route}", "not-the-token")[0] == 401, route
        deadline = time.monotonic() + 30
        while (ready := get(f"{endpoint.url}/readyz", endpoint.token))[0] != 200:  # once partitions are assigned
            assert ready[0] == 503 and "failed" in json.loads(ready[1]), ready
            assert time.monotonic() < deadline, (ready, stack.logs())
            time.sleep(0.2)
        body = json.loads(ready[1])
        assert body["status"] == "ready" and body["checks"]["clickhouse"] == "ok", body
        assert body["checks"]["partitions"] == "4 assigned: 0, 1, 2, 3", body

        send_raw(stack.bootstrap, stack.topic, bad[:5])
        assert stack.ingest(path).returncode == 0
        send_raw(stack.bootstrap, stack.topic, bad[5:])
        stack.wait_for_rows(N_TWEETS, timeout=60)

        # Counted once a batch is written and acknowledged, and committed within a second: wait for both.
        deadline = time.monotonic() + 20
        while True:
            metrics = scrape(endpoint.url, endpoint.token)
            lag = {
                labels["partition"]: v
                for _, labels, v in metrics.get("emostream_consumer_lag", [])
                if labels["topic"] == stack.topic
            }
            consumed = value(metrics, "emostream_records_consumed_total")
            if consumed == N_TWEETS + len(bad) and lag == dict.fromkeys("0123", 0.0):
                break
            assert time.monotonic() < deadline, (consumed, lag, stack.logs())
            time.sleep(0.3)

        scored = value(metrics, "emostream_records_scored_total")
        dead = value(metrics, "emostream_records_dead_lettered_total")
        reviewed = value(metrics, "emostream_records_reviewed_total")
        assert scored == stack.sql("SELECT count() FROM emotion_scores")[0][0] == N_TWEETS
        assert dead == stack.sql(f"SELECT count() FROM dead_letters WHERE topic = '{stack.topic}'")[0][0] == len(bad)
        assert reviewed == stack.sql("SELECT count() FROM review_queue")[0][0] == sampled

        # a log line per insert, which says how many micro-batches it wrote (more than one when the writer was behind)
        log = (tmp_path / "worker-0.log").read_text()
        inserts = [int(n) for n in re.findall(r" INFO emostream\.worker: scored \d+ tweets in (\d+) batch", log)]
        batches = sum(inserts)
        assert batches > 1
        for histogram in ("emostream_batch_size", "emostream_batch_model_seconds"):
            assert value(metrics, f"{histogram}_count") == batches, histogram
        assert value(metrics, "emostream_batch_insert_seconds_count") == len(inserts)
        assert value(metrics, "emostream_batch_size_sum") == consumed
        assert value(metrics, "emostream_end_to_end_latency_seconds_count") == scored  # one per scored tweet
        assert 0 < value(metrics, "emostream_end_to_end_latency_seconds_sum") / scored < 60

        serving = ModelRegistry(trained_registry).require_current().name
        health = json.loads(get(f"{endpoint.url}/healthz", endpoint.token)[1])
        assert health["status"] == "ok"  # liveness is unchanged
        assert [labels for _, labels, v in metrics["emostream_model_info"] if v == 1.0] == [
            {"version": serving, "runtime": health["runtime"]}
        ]

        # SIGTERM still stops the worker cleanly, and in time, with the new web routes and probe thread.
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert worker.wait(30) == 0, stack.logs()
        assert time.monotonic() - started < 10 + 2, stack.logs()
    finally:
        stack.stop()


# --- readiness and lag without a broker ---------------------------------------------------------------


@dataclass
class Model:
    version: str = "v0042"
    runtime_name: str = "stub"


class Answers:
    """A probe that gives a fixed answer (None: ClickHouse answered)."""

    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem

    async def check(self) -> str | None:
        return self.problem

    def close(self) -> None:
        pass


def report(readiness: Readiness) -> tuple[int, dict]:
    try:
        return asyncio.run(readiness.report())
    finally:
        readiness.close()


def test_ready_when_every_check_passes() -> None:
    status, body = report(Readiness(Model, Answers(), lambda: {0, 1}))
    assert status == 200
    assert body["status"] == "ready" and "failed" not in body
    assert body["checks"] == {
        "model": "v0042 (stub)",
        "clickhouse": "ok",
        "partitions": "2 assigned: 0, 1",
        "batches": "ok",
    }


def test_not_ready_while_a_batch_keeps_failing_past_the_timeout_and_ready_once_it_goes_through() -> None:
    """A ClickHouse that answers SELECT 1 but refuses inserts (a full disk) must not look ready."""
    now = [1000.0]
    health = BatchHealth(clock=lambda: now[0])
    readiness = Readiness(Model, Answers(), lambda: {0}, health=health, failing_timeout=30)
    health.failed("write", "DatabaseError: Code: 243. Cannot reserve 1.00 MiB, not enough space (NOT_ENOUGH_SPACE)")
    now[0] += 29
    assert asyncio.run(readiness.report())[0] == 200  # a retry or two is not yet a problem
    health.failed("write", "DatabaseError: Code: 243. Cannot reserve 1.00 MiB, not enough space (NOT_ENOUGH_SPACE)")
    now[0] += 2
    status, body = asyncio.run(readiness.report())
    assert (status, body["failed"]) == (503, ["batches"])
    assert body["checks"]["batches"] == (
        "write failing for 31 s (2 tries): DatabaseError: Code: 243. Cannot reserve 1.00 MiB, not enough space "
        "(NOT_ENOUGH_SPACE)"
    )
    health.succeeded("write")
    assert asyncio.run(readiness.report())[0] == 200


def test_metrics_name_the_failing_stage_and_its_error_and_read_zero_once_it_recovers() -> None:
    now = [50.0]
    metrics = WorkerMetrics(clock=lambda: now[0])
    metrics.health.failed("score", "RuntimeError: CUDA error: out of memory")
    now[0] += 12
    text = metrics.exposition(None)[0].decode()
    assert 'emostream_batch_failing_seconds{stage="score"} 12.0' in text
    assert 'emostream_batch_failing_seconds{stage="write"} 0.0' in text
    assert 'emostream_batch_failure_attempts{error="RuntimeError: CUDA error: out of memory",stage="score"} 1.0' in text
    metrics.health.succeeded("score")
    text = metrics.exposition(None)[0].decode()
    assert 'emostream_batch_failing_seconds{stage="score"} 0.0' in text
    assert "emostream_batch_failure_attempts{" not in text


def test_not_ready_without_partitions_or_a_model() -> None:
    status, body = report(Readiness(Model, Answers(), set))
    assert (status, body["status"], body["failed"]) == (503, "not ready", ["partitions"])
    assert body["checks"]["partitions"].startswith("no partitions assigned")
    status, body = report(Readiness(lambda: None, Answers(), lambda: {3}))
    assert (status, body["failed"]) == (503, ["model"])


def test_not_ready_when_clickhouse_refuses_connections() -> None:
    probe = ClickHouseProbe(f"http://default:@127.0.0.1:{free_port()}/default", timeout=2)
    status, body = report(Readiness(Model, probe, lambda: {0}))
    assert (status, body["failed"]) == (503, ["clickhouse"])
    assert body["checks"]["clickhouse"].startswith("SELECT 1 failed: "), body


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung ClickHouse."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_a_hung_clickhouse_is_reported_within_the_timeout(silent_server: int) -> None:
    probe = ClickHouseProbe(f"http://default:@127.0.0.1:{silent_server}/default", timeout=0.5)
    readiness = Readiness(Model, probe, lambda: {0})

    async def twice() -> list[tuple[int, dict]]:
        return [await readiness.report(), await readiness.report()]  # the second waits on the same probe

    started = time.monotonic()
    try:
        answers = asyncio.run(twice())
    finally:
        readiness.close()
    assert time.monotonic() - started < 5
    for status, body in answers:
        assert (status, body["failed"]) == (503, ["clickhouse"])
        assert body["seconds"] < 1.0
    assert answers[0][1]["checks"]["clickhouse"] == "no answer to SELECT 1 within 0.5 s"
    # the second waited on the same probe, which either still hangs or has hit the client's own read timeout
    second = answers[1][1]["checks"]["clickhouse"]
    assert second == answers[0][1]["checks"]["clickhouse"] or "timed out" in second, second


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class FakeConsumer:
    """What :func:`consumer_lag` reads from Faust's consumer: assignment, fetch high watermarks, commits."""

    def __init__(self, highwaters: dict[TP, int | None], committed: dict[TP, int | None]) -> None:
        self.highwaters = highwaters
        self._committed_offset = committed

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]


def test_lag_is_the_fetch_high_watermark_minus_the_committed_offset() -> None:
    consumer = FakeConsumer(
        {TP("t", 0): 100, TP("t", 1): 7, TP("t", 2): None, TP("t", 3): 5, TP("other", 0): 9},
        {TP("t", 0): 60, TP("t", 1): None, TP("t", 3): 8},
    )
    # 0: 40 behind; 1: nothing committed, all 7; 2: never fetched, no figure; 3: impossible, left out
    assert consumer_lag(consumer, "t") == {("t", 0): 40, ("t", 1): 7}


def test_each_worker_has_a_registry_of_its_own() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()  # the same names twice in one process: no collision
    first.batch_taken(3)
    first.follow_model(Model)
    first.follow_lag(lambda: {("t", 0): 4})
    text = first.exposition(None)[0].decode()
    assert "emostream_records_consumed_total 3.0" in text
    assert 'emostream_model_info{runtime="stub",version="v0042"} 1.0' in text
    assert 'emostream_consumer_lag{partition="0",topic="t"} 4.0' in text
    assert "emostream_records_consumed_total 0.0" in second.exposition(None)[0].decode()
    assert "emostream_model_info{" not in second.exposition(None)[0].decode()  # no model followed yet


def test_model_info_follows_a_hot_swap() -> None:
    scorer = BatchScorer(Model("v0001"), 0.0)  # type: ignore[arg-type]
    metrics = WorkerMetrics()
    metrics.follow_model(lambda: scorer.model)
    scorer.swap(Model("v0002"))  # type: ignore[arg-type]  # what ModelWatcher does once a version has loaded
    text = metrics.exposition(None)[0].decode()
    assert 'emostream_model_info{runtime="stub",version="v0002"} 1.0' in text
    assert 'version="v0001"' not in text
