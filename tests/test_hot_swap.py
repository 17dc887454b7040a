"""Hot swap: a running worker serves a newly promoted model version from the next batch on.

The unit tests drive :class:`emostream.stream.worker.model_swap.ModelWatcher` and the scorer directly (real runtimes, no
broker); the integration test promotes a version mid-stream under a real worker process, on a real
broker and the real ClickHouse engine, and checks every row afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from emostream.model.config import RuntimeConfig
from emostream.model.registry import ModelRegistry
from emostream.model.runtime import ScoringRuntime, load_runtime
from emostream.schemas import Tweet
from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.kafka.ingest import produce
from emostream.stream.worker.model_swap import ModelWatcher
from emostream.stream.worker.scoring import BatchScorer, RawRecord
from tests.test_streaming import Stack

SWITCH_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO emostream\.worker: "
    r"model v0001 -> v0002: loaded in ([\d.]+) s, serving from the next batch",
    re.MULTILINE,
)


def two_version_registry(
    trained_registry: Path, root: Path, names: tuple[str, ...] = ("v0001", "v0002")
) -> ModelRegistry:
    """Copies of the trained tiny model under ``names``, with ``current`` -> the first."""
    source = ModelRegistry(trained_registry).require_current().path
    registry = ModelRegistry(root)
    for name in names:
        shutil.copytree(source, root / name)
    registry.promote(registry.get(names[0]))
    return registry


def record(i: int, text: str = "i feel great today") -> RawRecord:
    value = Tweet(id=f"u{i}", text=text, brand="acme").model_dump_json().encode()
    return RawRecord("tweets", 0, i, f"u{i}".encode(), value)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def worker_log() -> Iterator[Records]:
    """The ``emostream.worker`` records, whether or not the CLI's logging config stopped their propagation."""
    logger, handler = logging.getLogger("emostream.worker"), Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class Stub:
    """A model that answers fixed probabilities; ``during`` runs inside predict_proba (mid-batch)."""

    runtime_name = "stub"

    def __init__(self, version: str, during: object = None) -> None:
        self.version = version
        self.during = during

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if callable(self.during):
            self.during()
        return np.full((len(texts), 6), 1 / 6, dtype=np.float32)


def test_a_batch_is_scored_by_the_model_it_started_with() -> None:
    new = Stub("v0002")
    scorer = BatchScorer(Stub("v0001"), 0.0)  # type: ignore[arg-type]
    scorer.model.during = lambda: scorer.swap(new)  # type: ignore[attr-defined]  # a swap mid-batch
    first = scorer.score([record(i) for i in range(3)])
    assert [s.model_version for s in first.scores] == ["v0001"] * 3
    second = scorer.score([record(i) for i in range(3, 6)])
    assert [s.model_version for s in second.scores] == ["v0002"] * 3


@pytest.mark.parametrize("broken", ["bad weights", "missing directory"])
def test_a_broken_version_keeps_the_old_model_serving(
    trained_registry: Path, tmp_path: Path, worker_log: Records, broken: str
) -> None:
    registry = two_version_registry(trained_registry, tmp_path / "models", ("v0001", "v0002", "v0003"))
    settings = Settings(registry=registry.root, home=tmp_path / "home")
    if broken == "bad weights":
        (registry.root / "v0002" / "config.json").write_text("{ not json")
    else:
        shutil.rmtree(registry.root / "v0002")
    loads: list[str] = []

    def counting_loader(settings: Settings, path: Path) -> ScoringRuntime:
        loads.append(path.name)
        return load_runtime(settings, path)

    scorer = BatchScorer(load_runtime(settings, registry.root / "v0001"), 0.0)  # type: ignore[arg-type]
    serving = scorer.model
    watcher = ModelWatcher(settings.piece(RuntimeConfig), settings.registry, scorer, loader=counting_loader)
    (registry.root / "current").write_text("v0002\n")  # promote() would refuse a missing version: a hand edit

    async def polls() -> list[bool]:
        try:
            return [await watcher.check() for _ in range(3)]
        finally:
            watcher.close()

    assert asyncio.run(polls()) == [False, False, False]
    assert scorer.model is serving
    assert [s.model_version for s in scorer.score([record(1)]).scores] == ["v0001"]
    errors = worker_log.messages(logging.ERROR)
    assert len(errors) == 1, errors  # said once, not on every poll
    assert "model v0001 -> v0002: loading failed, still serving v0001" in errors[0]
    assert loads == (["v0002"] if broken == "bad weights" else [])  # and not retried while `current` stays

    registry.promote(registry.get("v0003"))  # the pointer moves on: a good version is picked up
    assert asyncio.run(polls()) == [True, False, False]
    assert [s.model_version for s in scorer.score([record(2)]).scores] == ["v0003"]
    assert [m for m in worker_log.messages() if m.startswith("model v0001 -> v0003: loaded in")], worker_log.messages()


def read_coordinates(
    bootstrap: str, topic: str, expect: int, partitions: int, timeout: float = 20
) -> dict[str, tuple[int, int]]:
    """tweet id -> (partition, offset) of every record on ``topic`` (of ``partitions`` partitions)."""

    async def consume() -> dict[str, tuple[int, int]]:
        # earliest by configuration: seek_to_beginning() after assign() races the fetcher's reset to "latest"
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        found: dict[str, tuple[int, int]] = {}
        try:
            # by count: Kafka's first metadata response names no topic (tansu's names them all)
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            deadline = time.monotonic() + timeout
            while len(found) < expect and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.update({r.key.decode(): (r.partition, r.offset) for r in records})
        finally:
            await consumer.stop()
        return found

    return asyncio.run(consume())


def log_time(stamp: str) -> float:
    """Epoch seconds of a log line's ``asctime`` (local time, this machine's zone)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.mark.integration
def test_promoting_mid_stream_switches_between_batches(
    any_broker: str, trained_registry: Path, small_data: Path, tmp_path: Path
) -> None:
    broker = any_broker
    n, rate, promote_after, grace = 360, 40.0, 4.0, 0.5
    registry = two_version_registry(trained_registry, tmp_path / "models")
    stack = Stack(broker, registry.root, tmp_path)
    stack.env.update({"EMOSTREAM_MODEL_POLL_INTERVAL": "0.5", "EMOSTREAM_MAX_BATCH": "16"})
    texts = [line.rpartition(";")[0] for line in (small_data / "train.txt").read_text().splitlines()]

    def tweets() -> Iterator[tuple[int, Tweet]]:
        for i in range(n):  # stamped as produce() takes them, just before each one's send slot
            yield i, Tweet(id=f"h{i:04d}", text=texts[i % len(texts)], brand="acme", created_at=datetime.now(UTC))

    async def stream_and_promote() -> float:
        sending = asyncio.create_task(produce(broker, stack.topic, tweets(), rate=rate, progress=False))
        await asyncio.sleep(promote_after)
        promoted_at = time.time()
        registry.promote(registry.get("v0002"))
        report = await sending
        assert report.sent == n
        return promoted_at

    try:
        stack.start_worker()
        promoted_at = asyncio.run(stream_and_promote())
        deadline = time.monotonic() + 60
        while stack.sql("SELECT uniqExact(tweet_id) FROM emotion_scores")[0][0] < n:
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.3)
    finally:
        stack.stop()
    log = (tmp_path / "worker-0.log").read_text(errors="replace")
    switch = SWITCH_LINE.search(log)
    assert switch, log[-3000:]
    switched_at, load_seconds = log_time(switch.group(1)), float(switch.group(2))
    print(f"switch logged {switched_at - promoted_at:.2f} s after the promotion; loaded in {load_seconds} s")
    assert promoted_at - 0.01 <= switched_at <= promoted_at + 0.5 + load_seconds + 2.0
    assert "loading failed" not in log

    sink = ClickHouseSink(stack.dsn())
    try:
        _, rows = sink.query(
            "SELECT tweet_id, model_version, toUnixTimestamp64Milli(created_at) / 1000, "
            "toUnixTimestamp64Milli(scored_at) / 1000 FROM emotion_scores"
        )
        _, repeated = sink.query(
            "SELECT tweet_id, model_version, count() AS c FROM emotion_scores GROUP BY ALL HAVING c > 1"
        )
    finally:
        sink.close()
    assert repeated == []  # no tweet scored twice by the same version
    assert sorted(r[0] for r in rows) == [f"h{i:04d}" for i in range(n)]  # none lost, each scored once
    version = {r[0]: r[1] for r in rows}
    assert set(version.values()) == {"v0001", "v0002"}
    late = [r for r in rows if r[2] > switched_at + grace]
    assert late and all(r[1] == "v0002" for r in late), [r for r in late if r[1] != "v0002"][:5]
    assert all(r[3] >= promoted_at - 0.01 for r in rows if r[1] == "v0002")  # nothing new before the promotion
    # Within each partition, in offset order: v0001 up to one batch, v0002 from the next on, never back.
    coordinates = read_coordinates(broker, stack.topic, n, int(stack.env["EMOSTREAM_PARTITIONS"]))
    for partition in {p for p, _ in coordinates.values()}:
        ids = sorted((o, i) for i, (p, o) in coordinates.items() if p == partition)
        sequence = [version[i] for _, i in ids]
        assert sequence == sorted(sequence), (partition, sequence)
