"""The batch pipeline, without Faust: submit returns while its batch is scored, acks wait for writes.

Unit tests: the model, the sink, the topics and the stream's ack are stand-ins that record when they
are called (the real worker runs the same pipeline in tests/test_streaming.py and test_hot_swap.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from emostream.stream.worker.pipeline import BatchPipeline, WorkerParts
from emostream.stream.worker.review_policy import ReviewPolicy
from emostream.stream.worker.scoring import BatchScorer
from emostream.stream.worker.shutdown import Shutdown, StopRequested

SURE = [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]


class Clock:
    """Names what happened when, in one list, so tests can compare orders."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def mark(self, what: str) -> None:
        with self.lock:
            self.events.append((what, time.perf_counter()))

    def at(self, what: str) -> float:
        return next(t for name, t in self.events if name == what)


class SlowModel:
    version, runtime_name = "v0001", "fixed"

    def __init__(self, clock: Clock, seconds: float = 0.05) -> None:
        self.clock, self.seconds = clock, seconds

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.clock.mark(f"score {texts[0]}")
        time.sleep(self.seconds)
        self.clock.mark(f"scored {texts[0]}")
        return np.array([SURE for _ in texts], dtype=np.float32)


class SlowSink:
    def __init__(self, clock: Clock, seconds: float = 0.3, release: threading.Event | None = None) -> None:
        self.clock, self.seconds, self.release, self.written, self.inserts = clock, seconds, release, [], []

    def write(self, scores: list, dead_letters: list = (), reviews: list = ()) -> None:  # type: ignore[assignment]
        batches = "".join(dict.fromkeys(s.tweet_id.split("-")[0] for s in scores))  # "a", or "bc" for two in one
        self.clock.mark(f"write {batches} start")
        if self.release is not None:
            self.release.wait(10)
        time.sleep(self.seconds)
        self.written += [s.tweet_id for s in scores]
        self.inserts.append(batches)
        self.clock.mark(f"write {batches} end")


def batch(name: str, size: int = 3) -> list[Any]:
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                topic="tweets",
                partition=0,
                offset=i,
                key=f"{name}-{i}".encode(),
                value=json.dumps({"id": f"{name}-{i}", "text": name}).encode(),
                timestamp=time.time(),
                acked=False,
            )
        )
        for i in range(size)
    ]


def pipeline_with(
    clock: Clock, sink: SlowSink, shutdown: Shutdown, max_queued: int = 4, model_seconds: float = 0.05
) -> tuple[BatchPipeline, list[str]]:
    parts = WorkerParts(
        BatchScorer(SlowModel(clock, model_seconds), ReviewPolicy(0.6)),  # type: ignore[arg-type]
        sink,  # type: ignore[arg-type]
        ThreadPoolExecutor(1),
        shutdown=shutdown,
    )
    acked: list[str] = []

    async def ack(event: Any) -> None:
        acked.append(event.message.key.decode())
        clock.mark(f"ack {event.message.key.decode()}")

    topic = SimpleNamespace(send=None)
    return BatchPipeline(parts, topic, topic, ack=ack, max_queued=max_queued), acked  # type: ignore[arg-type]


def test_the_next_batch_is_scored_while_the_one_before_is_written_and_acks_follow_the_writes() -> None:
    clock = Clock()
    sink = SlowSink(clock)
    pipeline, acked = pipeline_with(clock, sink, Shutdown(timeout=60))

    async def run() -> None:
        await pipeline.submit(batch("a"))
        await pipeline.submit(batch("b"))
        await pipeline.written()

    asyncio.run(run())
    assert clock.at("score b") < clock.at("write a end")  # overlap: b scored while a was being written
    assert clock.at("write a end") <= clock.at("ack a-0")  # acked only once written
    assert clock.at("ack a-2") <= clock.at("write b start")  # one batch in the writer at a time, in order
    assert acked == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    assert sink.written == acked


def test_a_stop_while_writing_acks_nothing_and_withholds_the_batch() -> None:
    clock, release = Clock(), threading.Event()
    sink = SlowSink(clock, seconds=0.0, release=release)  # the write hangs, like a ClickHouse that does not answer
    shutdown = Shutdown(timeout=60)
    pipeline, acked = pipeline_with(clock, sink, shutdown)
    first, second = batch("a"), batch("b")

    async def run() -> None:
        await pipeline.submit(first)
        await asyncio.sleep(0.2)
        shutdown.request("SIGTERM")
        with pytest.raises(StopRequested):  # from submit, or once b is queued behind the hanging write, here
            await pipeline.submit(second)
            await pipeline.written()

    try:
        asyncio.run(run())
    finally:
        release.set()
        shutdown.done()
    assert acked == []
    # withheld: counts as acked for Faust's shutdown, offsets never recorded, so never committed (a b that
    # submit refused is the agent's to withhold: give_way)
    assert all(event.message.acked for event in first)
    assert [name for name, _ in clock.events if name.endswith("start")] == ["write a start"]  # b never written


def test_batches_scored_while_the_writer_is_behind_share_one_insert_in_order() -> None:
    clock = Clock()
    sink = SlowSink(clock)
    pipeline, acked = pipeline_with(clock, sink, Shutdown(timeout=60))

    async def run() -> None:
        for name in "abc":
            await pipeline.submit(batch(name))  # b and c are scored while a is written
        await pipeline.written()

    asyncio.run(run())
    assert sink.inserts == ["a", "bc"]
    assert acked == [f"{name}-{i}" for name in "abc" for i in range(3)]
    assert clock.at("write a end") <= clock.at("ack a-0") <= clock.at("write bc start")


def test_the_scorer_waits_when_max_queued_batches_wait_for_the_writer() -> None:
    clock = Clock()
    sink = SlowSink(clock)
    pipeline, acked = pipeline_with(clock, sink, Shutdown(timeout=60), max_queued=1)

    async def run() -> None:
        for name in "abcd":  # a to the writer; b waits in the one place in the queue; c scored, held
            await pipeline.submit(batch(name))
        await pipeline.written()

    asyncio.run(run())
    # c could only be queued once the writer took b (after it finished a), and d scored only once c left
    # the scorer. ("write b start" is marked on the writer's thread, which may start a moment after the
    # writer took b: after the end of a is the moment that is ordered.) With room for 4, d would be
    # scored 0.05 s after c, long before a's 0.3 s write ends.
    assert clock.at("write a end") <= clock.at("score d")
    assert sink.inserts == ["a", "b", "c", "d"]  # one waiting at a time: none to share an insert with
    assert acked == [f"{name}-{i}" for name in "abcd" for i in range(3)]


def test_submit_returns_while_its_batch_is_scored_so_the_agent_gathers_the_next_meanwhile() -> None:
    clock = Clock()
    pipeline, acked = pipeline_with(clock, SlowSink(clock, seconds=0.0), Shutdown(timeout=60))

    async def run() -> None:
        await pipeline.submit(batch("a"))
        clock.mark("a submitted")
        await pipeline.submit(batch("b"))  # waits for a to leave the scorer: one batch in it at a time
        clock.mark("b submitted")
        await pipeline.written()

    asyncio.run(run())
    assert clock.at("a submitted") < clock.at("scored a")  # back to the agent before the model finished a
    assert clock.at("scored a") <= clock.at("score b") <= clock.at("b submitted") + 0.04
    assert clock.at("b submitted") < clock.at("scored b")
    assert acked == [f"{name}-{i}" for name in "ab" for i in range(3)]


def test_a_stop_while_a_batch_is_scored_withholds_it_and_raises_at_the_next_submit() -> None:
    clock = Clock()
    shutdown = Shutdown(timeout=60)
    pipeline, acked = pipeline_with(clock, SlowSink(clock, seconds=0.0), shutdown, model_seconds=0.5)
    first, second = batch("a"), batch("b")

    async def run() -> None:
        await pipeline.submit(first)  # scoring for 0.5 s; the scorer's wait sees a stop within 0.1 s
        shutdown.request("SIGTERM")
        with pytest.raises(StopRequested):
            await pipeline.submit(second)
        pipeline.withhold()  # what the agent does on StopRequested (and give_way for the batch in hand)

    try:
        asyncio.run(run())
    finally:
        shutdown.done()
    assert acked == []
    assert all(event.message.acked for event in first)  # withheld: never committed
    assert not any(event.message.acked for event in second)  # never taken in: the agent's to withhold
    assert not [name for name, _ in clock.events if name.startswith("write")]


class FailingModel(SlowModel):
    """A model that fails its first ``failures`` calls, like a GPU out of memory for a moment."""

    def __init__(self, clock: Clock, failures: int) -> None:
        super().__init__(clock, seconds=0.0)
        self.failures = failures

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("CUDA error: out of memory")
        return super().predict_proba(texts)


def test_a_model_failure_is_retried_reported_while_it_lasts_and_the_batch_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scorer raising (not a record's fault) neither crashes the agent nor drops or commits the batch."""
    monkeypatch.setattr("emostream.stream.worker.pipeline.RETRY_FIRST_DELAY", 0.05)
    clock = Clock()
    sink = SlowSink(clock, seconds=0.0)
    pipeline, acked = pipeline_with(clock, sink, Shutdown(timeout=60))
    pipeline.parts.scorer.model = FailingModel(clock, failures=4)  # batch, plain sentence, batch, plain sentence
    seen: list[list[str]] = []

    async def run() -> None:
        await pipeline.submit(batch("a"))
        while not sink.written:
            seen.append([f"{f.stage}: {f.error} x{f.attempts}" for f in pipeline.parts.metrics.health.failures()])
            await asyncio.sleep(0.01)
        await pipeline.written()

    asyncio.run(run())
    assert "score: RuntimeError: CUDA error: out of memory x2" in {line for lines in seen for line in lines}
    assert pipeline.parts.metrics.health.failures() == []  # recovered: nothing failing any more
    assert acked == ["a-0", "a-1", "a-2"] and sink.written == acked


LOOP_PROBE = """
import asyncio, sys
from emostream.stream.worker.process import use_event_loop
chosen = use_event_loop(sys.argv[1])
print(chosen, type(asyncio.new_event_loop()).__module__.split(".")[0])
"""


@pytest.mark.parametrize(("setting", "expected"), [("uvloop", "uvloop uvloop"), ("asyncio", "asyncio asyncio")])
def test_the_worker_runs_faust_on_the_event_loop_its_setting_names(setting: str, expected: str) -> None:
    """In a fresh interpreter: the choice sets the policy every new loop (Faust's consumer thread's too) uses."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LOOP_PROBE, setting], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == expected
