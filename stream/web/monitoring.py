"""What a running worker tells an operator: Prometheus metrics (``/metrics``) and readiness (``/readyz``).

Metrics live in a registry of the worker's own, not prometheus_client's global one, so two apps in one
process (tests, ``up``) never collide over a name and a test sees only its own worker's figures.

Counters are per process. They count in :class:`emostream.stream.worker.pipeline.BatchPipeline` only once a
batch's rows are in ClickHouse and its review and dead-letter records acknowledged by the broker, so in one
process's life they match what it wrote: ``scored`` the rows of ``emotion_scores``, ``dead_lettered`` those of
``dead_letters``, ``reviewed`` those of ``review_queue``. A batch re-delivered after a crash (or after a
partition came back in a rebalance) is scored again and counted again by whichever process scores it,
while the tables hold it once (``emotion_scores`` skips the repeat; ``dead_letters`` and ``review_queue``
collapse it, read with FINAL); a restart starts every counter at zero (Prometheus' ``rate()`` and
``increase()`` handle the reset). ``consumed`` counts when a batch is taken from the topic, so
``consumed - scored - dead_lettered`` is what the worker holds but has not finished: the batch being
scored or written, or one withheld at a stop.

Consumer lag (``emostream_consumer_lag``, per topic and partition) is the high watermark the broker
returned with the latest fetch of that partition, minus the group's committed offset (nothing committed
yet: 0). It never uses ListOffsets end offsets: the embedded broker, tansu, undercounts those after
batched produces (measured: 636 for 679 records, 666 for 703), while the high watermark of its fetch
responses was exact in the same runs, at the tail and while reading a backlog. So the figure is
exported on every broker, with two conditions: a partition appears only once a fetch has answered for
it, and never with a negative figure (a high watermark below the committed offset is wrong, not lag;
it is left out rather than shown as 0). The figure is as fresh as the last fetch of the partition: a
fraction of a second when the worker keeps up, up to one fetch behind while it reads a backlog.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.kafka.faust_internals import committed_offsets

log = logging.getLogger("emostream.worker")

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
READY_TIMEOUT = 2.0  # seconds /readyz waits for ClickHouse's answer to SELECT 1
STAGES = ("score", "write", "send")  # of a batch, in the pipeline (emostream.stream.worker.pipeline)
ERROR_LABEL_CHARS = 200


@dataclass(frozen=True)
class Failure:
    """A stage whose batch keeps failing: for how long, how often it was tried, the latest error."""

    stage: str
    seconds: float
    attempts: int
    error: str


class BatchHealth:
    """Which stages of the pipeline (``score``, ``write``, ``send``) are failing their batch now, since when.

    A failing batch is retried (an outage: see ``emostream.stream.worker.write_errors``), so the worker neither
    crashes nor commits past it, and from outside it looks alive while nothing goes through. This is what ``/readyz``
    and ``/metrics`` read to say so. Updated and read on the event loop only.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failing: dict[str, tuple[float, int, str]] = {}  # stage -> (since, attempts, latest error)

    def failed(self, stage: str, error: str) -> None:
        """Count a failed try of ``stage``'s batch: the first one starts its clock, ``error`` replaces the last."""
        since, attempts, _ = self._failing.get(stage, (self._clock(), 0, ""))
        self._failing[stage] = (since, attempts + 1, error)

    def succeeded(self, stage: str) -> None:
        """``stage``'s batch went through: it is failing no longer (a later failure starts afresh)."""
        self._failing.pop(stage, None)

    def failures(self) -> list[Failure]:
        """The stages failing now, each with the seconds since its first failed try, the tries, the latest error."""
        now = self._clock()
        return [
            Failure(stage, now - since, attempts, error) for stage, (since, attempts, error) in self._failing.items()
        ]


class ServingModel(Protocol):
    """What metrics and readiness read of the serving model: its version and the runtime it runs on."""

    @property
    def version(self) -> str:
        """The registry version it serves."""

    @property
    def runtime_name(self) -> str:
        """The runtime it runs on (``torch-fp32``, ``onnx-int8``, ...)."""


class WorkerMetrics:
    """The worker's metrics and the registry that exposes them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: what the failing batches' durations are measured with (tests pass their own)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.consumed = Counter("emostream_records_consumed_total", "Records taken from the topic", registry=r)
        self.scored = Counter(
            "emostream_records_scored_total", "Tweets scored and written to emotion_scores", registry=r
        )
        self.dead_lettered = Counter(
            "emostream_records_dead_lettered_total",
            "Invalid records written to dead_letters and the DLQ topic",
            registry=r,
        )
        self.reviewed = Counter(
            "emostream_records_reviewed_total", "Tweets sent to review (review_queue and the review topic)", registry=r
        )
        self.batch_size = Histogram(
            "emostream_batch_size", "Records per micro-batch", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.model_seconds = Histogram(
            "emostream_batch_model_seconds",
            "Seconds a batch spent in parsing and the model",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.insert_seconds = Histogram(
            "emostream_batch_insert_seconds",
            "Seconds a batch's ClickHouse insert took, retries after failures included",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "emostream_end_to_end_latency_seconds",
            "Per scored tweet: its batch's write time minus the tweet's created_at",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.health = BatchHealth(clock)
        self.live = LiveCollector(self.health)
        r.register(self.live)
        ProcessCollector(registry=r)  # memory and CPU of the worker: the model dominates both

    def batch_taken(self, records: int) -> None:
        """A batch of ``records`` was taken from the topic: count them as consumed (before they are scored)."""
        self.consumed.inc(records)

    def batch_done(
        self,
        *,
        size: int,
        scored: int,
        dead_lettered: int,
        reviewed: int,
        model_seconds: float,
        insert_seconds: float | None,
        created_at: Iterable[datetime],
        written_at: float,
    ) -> None:
        """A batch is written and acknowledged: count it (never earlier, see the module's docstring)."""
        self.scored.inc(scored)
        self.dead_lettered.inc(dead_lettered)
        self.reviewed.inc(reviewed)
        self.batch_size.observe(size)
        self.model_seconds.observe(model_seconds)
        if insert_seconds is not None:  # None: written in an insert already observed (several batches in one)
            self.insert_seconds.observe(insert_seconds)
        for created in created_at:  # a clock ahead of ours would give a negative latency: 0 instead
            self.latency.observe(max(0.0, written_at - created.timestamp()))

    def follow_model(self, serving: Callable[[], ServingModel | None]) -> None:
        """``emostream_model_info`` reads the serving model at each scrape, so a hot swap shows at once."""
        self.live.model = serving

    def follow_lag(self, lag: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        """``emostream_consumer_lag`` reads ``lag`` ((topic, partition) -> records behind) at each scrape."""
        self.live.lag = lag

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asked for (``Accept``), and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class LiveCollector(Collector):
    """Figures read at scrape time from their source: the serving model and the consumer's lag."""

    def __init__(self, health: BatchHealth | None = None) -> None:
        self.model: Callable[[], ServingModel | None] = lambda: None
        self.lag: Callable[[], Mapping[tuple[str, int], int]] = dict
        self.health = health or BatchHealth()

    def describe(self) -> Iterator[Metric]:
        """Names only, so registering does not call the sources (the consumer may not exist yet)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """The figures now: the serving model, lag per partition (none while unavailable), each stage's failures."""
        info, lag, failing, failing_info = self._families()
        model = self.model()
        if model is not None:
            info.add_metric([model.version, model.runtime_name], 1.0)
        try:
            figures = self.lag()
        except Exception:  # a scrape during a rebalance or at a stop: no lag this time, not a failed scrape
            log.debug("consumer lag unavailable", exc_info=True)
            figures = {}
        for (topic, partition), value in sorted(figures.items()):
            lag.add_metric([topic, str(partition)], value)
        failures = {failure.stage: failure for failure in self.health.failures()}
        for stage in STAGES:  # 0 while a stage works, so an alert can compare it with a threshold
            failure = failures.get(stage)
            failing.add_metric([stage], failure.seconds if failure else 0.0)
            if failure is not None:
                failing_info.add_metric([stage, failure.error[:ERROR_LABEL_CHARS]], float(failure.attempts))
        yield info
        yield lag
        yield failing
        yield failing_info

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "emostream_model_info",
                "The model version serving now (value 1), and its runtime",
                labels=["version", "runtime"],
            ),
            GaugeMetricFamily(
                "emostream_consumer_lag",
                "Records behind the broker's high watermark from the latest fetch, per partition (see the README)",
                labels=["topic", "partition"],
            ),
            GaugeMetricFamily(
                "emostream_batch_failing_seconds",
                "Seconds the stage's current batch has kept failing (retried); 0 while it works",
                labels=["stage"],
            ),
            GaugeMetricFamily(
                "emostream_batch_failure_attempts",
                "Tries of the batch failing now, per stage, labelled with the latest error; absent while it works",
                labels=["stage", "error"],
            ),
        )


def consumer_lag(consumer: Any, topic: str) -> dict[tuple[str, int], int]:
    """Lag per assigned partition of ``topic``, from a Faust consumer (see the module's docstring).

    Runs on the event loop, where Faust keeps its committed offsets; the high watermark is one attribute
    read from the state of the consumer's thread. The committed offsets are Faust's own record of what it
    committed (the next offset to read, None for nothing or 0), which Faust keeps private
    (:func:`~emostream.stream.kafka.faust_internals.committed_offsets`).
    """
    committed = committed_offsets(consumer)
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        if tp.topic != topic:
            continue
        try:
            highwater = consumer.highwater(tp)
        except AssertionError:  # revoked between the two calls
            continue
        if highwater is None:  # no fetch has answered for it yet
            continue
        behind = highwater - (committed.get(tp) or 0)
        if behind >= 0:
            lag[(tp.topic, tp.partition)] = behind
    return lag


def assigned_partitions(consumer: Any, topic: str) -> set[int]:
    """The partitions of ``topic`` assigned to this consumer; none while it is not started or rebalancing."""
    try:
        return {tp.partition for tp in consumer.assignment() if tp.topic == topic}
    except Exception:  # ConsumerNotStarted, or a stop in progress
        return set()


class ClickHouseProbe:
    """``SELECT 1`` on a ClickHouse client and a thread of its own, never the sink's.

    The sink's client belongs to the scoring thread: a chDB handle serializes calls behind a lock, and
    an HTTP session refuses concurrent queries, so probing through it would wait behind a batch's
    insert (a busy worker would look unready) or disturb it. Probing on the scoring thread (the
    worker's executor) would queue behind batches the same way. So the probe has its own client (its
    own chDB handle on the same engine, or its own HTTP connection), used only on its own thread: no
    client is ever shared between threads. A probe that hangs is not stacked up: while it runs, every
    /readyz waits on that same one, at most ``timeout`` seconds.
    """

    def __init__(self, dsn: ClickHouseDsn | str, timeout: float = READY_TIMEOUT) -> None:
        self.dsn = ClickHouseDsn.of(dsn)
        self.timeout = timeout
        self._client: Any = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="emostream-readyz")
        self._pending: asyncio.Future[None] | None = None

    def _connect(self) -> Any:
        import clickhouse_connect

        if self.dsn.embedded:
            return clickhouse_connect.get_client(dsn=self.dsn.url)
        # Bounded (whole seconds: the client's unit), so a stalled server cannot hold the probe thread,
        # and with it the worker's exit, for long.
        seconds = max(1, math.ceil(self.timeout))
        return clickhouse_connect.get_client(
            dsn=self.dsn.url, connect_timeout=seconds, send_receive_timeout=seconds, query_retries=0
        )

    def _select_one(self) -> None:
        """On the probe thread only."""
        if self._client is None:
            self._client = self._connect()
        try:
            self._client.command("SELECT 1")
        except Exception:
            self._drop_client()  # start afresh next time (a server that restarted, a broken connection)
            raise

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("closing the readiness client failed", exc_info=True)

    async def check(self) -> str | None:
        """None when ClickHouse answered, else why not."""
        if self._pending is None or self._pending.done():
            if self._pending is not None and not self._pending.cancelled():
                self._pending.exception()  # retrieved: an answer nobody waited for is not logged as lost
            self._pending = asyncio.get_running_loop().run_in_executor(self._thread, self._select_one)
        try:
            await asyncio.wait_for(asyncio.shield(self._pending), self.timeout)
        except TimeoutError:
            return f"no answer to SELECT 1 within {self.timeout:g} s"
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"SELECT 1 failed: {first_line}"
        return None

    def close(self) -> None:
        """Close the client on its own thread, then end the thread (a probe in flight finishes first)."""
        self._thread.submit(self._drop_client)
        self._thread.shutdown(wait=True)


class Probe(Protocol):
    """What :class:`Readiness` needs of a ClickHouse probe (:class:`ClickHouseProbe` is one; tests pass fakes)."""

    async def check(self) -> str | None:
        """None when ClickHouse answered, else why not."""

    def close(self) -> None:
        """Release what the probe holds (its client, its thread)."""


@dataclass
class Readiness:
    """Ready = the model is loaded, ClickHouse answers, the consumer has partitions of the topic, and no
    batch has been failing for longer than ``failing_timeout`` (a ClickHouse that answers ``SELECT 1`` can
    still refuse every insert: a full disk, lost grants, a broker refusing the review records).

    Each check is a callable so it can be tested without a broker or a worker; ``/readyz`` answers 200 or
    503 with :meth:`report`'s body. Liveness (``/healthz``) stays separate: a worker waiting out a
    ClickHouse outage or a rebalance is not ready, but restarting it would not help.
    """

    model: Callable[[], ServingModel | None]
    clickhouse: Probe
    partitions: Callable[[], set[int]]
    health: BatchHealth = field(default_factory=BatchHealth)
    failing_timeout: float = 30.0  # seconds a batch may fail before the worker is not ready

    async def report(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body): each check's result, and the names of those that failed."""
        started = time.perf_counter()
        checks: dict[str, str] = {}
        failed: list[str] = []
        model = self.model()
        if model is None:
            failed.append("model")
            checks["model"] = "no model loaded"
        else:
            checks["model"] = f"{model.version} ({model.runtime_name})"
        problem = await self.clickhouse.check()
        if problem is not None:
            failed.append("clickhouse")
        checks["clickhouse"] = problem or "ok"
        partitions = self.partitions()
        if not partitions:
            failed.append("partitions")
            checks["partitions"] = "no partitions assigned (starting, rebalancing, or more workers than partitions)"
        else:
            checks["partitions"] = f"{len(partitions)} assigned: {', '.join(map(str, sorted(partitions)))}"
        stuck = [f for f in self.health.failures() if f.seconds >= self.failing_timeout]
        if stuck:
            failed.append("batches")
            checks["batches"] = "; ".join(
                f"{f.stage} failing for {f.seconds:.0f} s ({f.attempts} tries): {f.error}" for f in stuck
            )
        else:
            checks["batches"] = "ok"
        body: dict[str, Any] = {"status": "not ready" if failed else "ready", "checks": checks}
        if failed:
            body["failed"] = failed
        body["seconds"] = round(time.perf_counter() - started, 3)
        return (503 if failed else 200), body

    def close(self) -> None:
        """Close the ClickHouse probe (its client and thread); the other checks hold nothing."""
        self.clickhouse.close()
