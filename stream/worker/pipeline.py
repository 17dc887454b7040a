"""A worker's batches in three stages: batch N+1 is gathered while N is scored and N-1 written.

The agent (Faust's per-record work on the event loop), the model (a GPU, or ONNX Runtime's threads on a
CPU) and the write (the ClickHouse insert, then the broker's acknowledgements of the review and
dead-letter records) wait on different things. Done one after the other, the model sat idle while the
next batch was gathered and while the last one was written; on a GPU, where a batch scores in a few
milliseconds, those were most of a batch's time. So the scorer and the sink have a thread each, and the
agent gathers the next batch while the scorer works. Scored batches wait for the writer in order; when
it falls behind, those waiting go in one insert, and when ``max_queued`` wait, the scorer waits too,
which bounds the memory. One scorer and one writer, in order, keep the offsets in order.

Delivery stays at-least-once. Events come from ``noack_take``, which never acks by itself: a batch's
events are acked only after its rows are in ClickHouse and its records are acknowledged by the broker,
so Faust commits only written offsets. A stop leaves the batches being scored, written or waiting, and
the batch in hand, uncommitted (withheld, see :func:`give_way`); what the writer finished meanwhile
comes back once more and the sink leaves it out.

Nothing stops the stream for good. Every record leaves the scorer as a score or a dead letter
(``emostream.stream.worker.records``, ``emostream.stream.worker.scoring``), and rows ClickHouse refuses for what
they hold become dead letters too (``emostream.stream.worker.write_errors``). What is left to fail is an outage
(the model, ClickHouse or the broker down): the stage that fails retries its batch with back-off, never committing
past it, and ``WorkerMetrics.health`` says which stage, since when and why, for ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from faust.types import EventT

from emostream.schemas import DeadLetter, ReviewItem
from emostream.stream.clickhouse.sink import Sink
from emostream.stream.kafka.faust_internals import withhold_messages
from emostream.stream.web.monitoring import WorkerMetrics
from emostream.stream.worker.records import ConsumedRecord
from emostream.stream.worker.scoring import BatchResult, BatchScorer
from emostream.stream.worker.shutdown import Shutdown, StopRequested
from emostream.stream.worker.write_errors import Rows, describe, write_isolating

log = logging.getLogger("emostream.worker")
T = TypeVar("T")
STOP_POLL_SECONDS = 0.1
MAX_QUEUED_BATCHES = 4  # scored batches waiting for the writer, and so the most that share one insert
STAGE_NAMES = {  # the stages of emostream.stream.web.monitoring.STAGES, as the log says them
    "score": "scoring a batch",
    "write": "ClickHouse write of a batch",
    "send": "sending a batch's review and dead-letter records",
}
RETRY_FIRST_DELAY, RETRY_MAX_DELAY = 0.5, 30.0  # seconds between tries of a failing batch: doubling, capped


@dataclass
class WorkerParts:
    """What an agent needs besides Kafka: the scorer and the sink, a thread for each (their calls block),
    and the shutdown they must give way to."""

    scorer: BatchScorer
    sink: Sink
    executor: ThreadPoolExecutor  # the scorer's thread
    shutdown: Shutdown = field(default_factory=lambda: Shutdown(timeout=10.0))
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)  # this worker's own registry
    writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="emostream-write")
    )  # the sink's thread: one, so a batch's inserts never overtake the one before

    async def run_blocking(self, fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
        """``fn`` on a worker thread (the scorer's unless told); gives up waiting (StopRequested) as soon as
        a stop is asked for."""
        loop = asyncio.get_running_loop()
        return await self.unless_stopping(loop.run_in_executor(executor or self.executor, fn, *args))

    async def unless_stopping(self, awaitable: Awaitable[T]) -> T:
        """Wait for ``awaitable``, or raise StopRequested as soon as a stop is asked for (it runs on)."""
        future = asyncio.ensure_future(awaitable)
        while True:
            done, _ = await asyncio.wait({future}, timeout=STOP_POLL_SECONDS)
            if done:
                return future.result()
            self.shutdown.raise_if_requested()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up (StopRequested) when a stop is asked for."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.shutdown.raise_if_requested()
            await asyncio.sleep(min(left, STOP_POLL_SECONDS))
        self.shutdown.raise_if_requested()

    def close(self) -> None:
        """End the scorer's and the sink's threads, once the calls they run or hold are done."""
        self.executor.shutdown(wait=True)
        self.writer.shutdown(wait=True)


@dataclass
class ScoredBatch:
    """A micro-batch between the scorer and the writer: its events (to ack once written) and its rows."""

    events: Sequence[EventT]
    result: BatchResult
    model_seconds: float
    waited: float


class BatchPipeline:
    """Scores batches as they come, one at a time, and writes them in order behind the scorer (see the module).

    When the writer falls behind (a GPU scores faster than ClickHouse takes single batches), the
    batches scored meanwhile wait for it, up to ``max_queued``, and go in one insert: fewer, bigger
    inserts, which is what ClickHouse wants (every insert is a part to merge). When it keeps up, each
    batch is written alone, at once. With ``max_queued`` batches waiting, the scorer waits too.
    """

    def __init__(
        self,
        parts: WorkerParts,
        review: faust.TopicT,
        dead_letters: faust.TopicT,
        ack: Callable[[EventT], Awaitable[Any]],
        max_queued: int = MAX_QUEUED_BATCHES,
    ) -> None:
        self.parts = parts
        self.review = review
        self.dead_letters = dead_letters
        self.ack = ack  # the stream's ack: the offset becomes committable, the stream's sensors see it
        self.max_queued = max_queued
        self.queued: list[ScoredBatch] = []  # scored, waiting for the writer
        self.in_writer: list[ScoredBatch] = []  # being written
        self.in_scorer: Sequence[EventT] = ()  # being scored, or scored and waiting for room in the queue
        self.scoring: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.taken = asyncio.Event()  # set each time the writer takes the queue

    async def submit(self, events: Sequence[EventT], waited: float = 0.0) -> None:
        """Start scoring ``events`` and return, so the agent gathers the next batch while this one is scored.

        Waits first for the batch before to leave the scorer (one batch in it at a time), and raises what
        stopped that one. Gathering a batch is Faust's per-record work on the event loop (5-10 ms for 512
        records here); done after the scoring instead of beside it, the model sat idle for it at every
        batch, which on a GPU is a large share of a batch's time.
        """
        await self.scored()
        self.in_scorer = events
        self.scoring = asyncio.create_task(self._score(events, waited), name="emostream scorer")
        self.scoring.add_done_callback(_retrieve)  # a stop is raised to whoever waits next, or withheld

    async def scored(self) -> None:
        """Until the batch in the scorer is scored and queued for the writer; re-raises what stopped it."""
        if self.scoring is not None:
            scoring = self.scoring
            await asyncio.wait({scoring})
            if self.scoring is scoring:
                self.scoring = None
            scoring.result()

    async def written(self) -> None:
        """Wait until every batch submitted is written and acked; re-raises what stopped the scorer or writer."""
        await self.scored()
        while self.writer is not None and not self.writer.done():
            await asyncio.wait({self.writer})
        self._raise_if_writer_failed()

    def withhold(self) -> None:
        """Stopping: the batches being scored, written or waiting stay uncommitted; the scorer's wait and the
        writer are cancelled (a write already in its thread may still land: the re-delivered batch then
        adds nothing)."""
        if self.in_scorer:
            withhold_acks(self.in_scorer)
            log.warning("stopping: the batch being scored (%d records) stays uncommitted", len(self.in_scorer))
        self._withhold_unwritten()
        for task in (self.scoring, self.writer):
            if task is not None and not task.done():
                task.cancel()

    async def _score(self, events: Sequence[EventT], waited: float) -> None:
        """Score a batch on the scorer's thread, then queue it for the writer (waiting while ``max_queued`` wait)."""
        records = [event.message for event in events]  # Faust's messages are ConsumedRecords as they are
        self.parts.metrics.batch_taken(len(records))
        started = time.perf_counter()
        # The scorer turns every record into a score or a dead letter, so what it raises is the model
        # failing on any text (an outage: out of memory, a lost GPU): the batch waits and is tried again.
        score = functools.partial(self.parts.run_blocking, self.parts.scorer.score, records)
        result = await retry_until_done(self.parts, "score", score)
        scored = ScoredBatch(events, result, time.perf_counter() - started, waited)
        self._raise_if_writer_failed()
        while len(self.queued) >= self.max_queued:  # the writer is this far behind: wait for it
            await self._writer_progress()
        self.queued.append(scored)
        self.in_scorer = ()
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write_queued(), name="emostream writer")
            self.writer.add_done_callback(_retrieve)  # the batches are withheld and logged by the writer itself

    def _withhold_unwritten(self) -> None:
        for batch in (*self.in_writer, *self.queued):
            withhold_acks(batch.events)

    def _raise_if_writer_failed(self) -> None:
        if self.writer is not None and self.writer.done() and not self.writer.cancelled():
            failure = self.writer.exception()
            if failure is not None:
                self.writer = None
                raise failure

    async def _writer_progress(self) -> None:
        """Until the writer takes the queue (or stops, which is raised)."""
        assert self.writer is not None
        self.taken.clear()
        taken = asyncio.ensure_future(self.taken.wait())
        try:
            await self.parts.unless_stopping(asyncio.wait({taken, self.writer}, return_when=asyncio.FIRST_COMPLETED))
        finally:
            taken.cancel()
        self._raise_if_writer_failed()

    async def _write_queued(self) -> None:
        while self.queued:
            self.in_writer, self.queued = self.queued, []
            self.taken.set()
            try:
                await self._write(self.in_writer)
            except StopRequested:
                unwritten = [*self.in_writer, *self.queued]
                self._withhold_unwritten()  # these and the ones queued behind: never committed, scored again
                log.warning(
                    "stopping: %d batch(es), %d records, being written or waiting stay uncommitted for the next worker",
                    len(unwritten),
                    sum(len(batch.events) for batch in unwritten),
                )
                raise
            self.in_writer = []

    async def _write(self, batches: Sequence[ScoredBatch]) -> None:
        """One insert for the batches, their review and dead-letter records, then their acks, in order.

        Rows ClickHouse refuses for what they hold become dead letters (``emostream.stream.worker.write_errors``),
        so each record still ends as exactly one outcome and the offsets behind it are committed.
        """
        parts = self.parts
        rows = Rows(
            scores=[score for batch in batches for score in batch.result.scores],
            sources=[source for batch in batches for source in batch.result.sources],
            reviews=[item for batch in batches for item in batch.result.reviews],
            dead_letters=[letter for batch in batches for letter in batch.result.dead_letters],
        )
        started = time.perf_counter()
        write = functools.partial(parts.run_blocking, write_isolating, parts.sink, rows, executor=parts.writer)
        written_rows = await retry_until_done(parts, "write", write)
        written, written_at = time.perf_counter(), time.time()
        await self._send(written_rows.reviews, written_rows.dead_letters)
        sent = time.perf_counter()
        for batch in batches:
            for event in batch.events:
                await self.ack(event)
        # Counted only now, written and acknowledged, so the counters match the tables (a stop before this
        # point leaves the batches uncommitted and uncounted).
        refused = {(letter.topic, letter.partition, letter.offset) for letter in written_rows.refused}
        for i, batch in enumerate(batches):
            result = batch.result
            scores = [s for s, r in zip(result.scores, result.sources, strict=True) if _coordinates(r) not in refused]
            kept = {score.tweet_id for score in scores}
            parts.metrics.batch_done(
                size=len(batch.events),
                scored=len(scores),
                dead_lettered=len(result.dead_letters) + len(result.scores) - len(scores),
                reviewed=sum(item.tweet.id in kept for item in result.reviews),
                model_seconds=batch.model_seconds,
                insert_seconds=written - started if i == 0 else None,  # one insert, observed once
                created_at=(score.created_at for score in scores),
                written_at=written_at,
            )
        log.info(
            "scored %d tweets in %d batch%s (%d to review, %d dead letters): "
            "gathered %.3f s, model %.3f s, insert %.3f s, sends %.3f s",
            len(written_rows.scores),
            len(batches),
            "" if len(batches) == 1 else "es",
            len(written_rows.reviews),
            len(written_rows.dead_letters),
            sum(batch.waited for batch in batches),
            sum(batch.model_seconds for batch in batches),
            written - started,
            sent - written,
        )

    async def _send(self, reviews: Sequence[ReviewItem], letters: Sequence[DeadLetter]) -> None:
        """The review and dead-letter records, each resolved once the broker has it (acks=all); retried while
        the broker refuses them (the records are keyed, and side outputs are at-least-once anyway)."""

        async def send_all() -> None:
            deliveries = [await self.review.send(key=i.tweet.id.encode(), value=i.bounded()) for i in reviews]
            deliveries += [await self.dead_letters.send(key=d.source_key, value=d) for d in letters]
            await self.parts.unless_stopping(asyncio.gather(*deliveries))

        await retry_until_done(self.parts, "send", send_all)


async def retry_until_done(parts: WorkerParts, stage: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, tried again with back-off for as long as it fails.

    What fails here is an outage (the model, ClickHouse or the broker down; errors about a record's data
    never get this far: they are dead letters), so the worker neither drops the batch nor commits past
    it: it waits, recovers by itself, and meanwhile ``parts.metrics.health`` says which stage fails, since
    when and why (``/readyz``, ``/metrics``). A stop request ends the wait (StopRequested); the batch
    stays uncommitted.
    """
    delay = RETRY_FIRST_DELAY
    while True:
        try:
            done = await attempt()
            parts.metrics.health.succeeded(stage)
            return done
        except StopRequested:
            raise
        except Exception as exc:
            parts.metrics.health.failed(stage, describe(exc))
            log.warning("%s failed (%s); retrying in %.1f s", STAGE_NAMES[stage], describe(exc), delay)
            await parts.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)


def _coordinates(record: ConsumedRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a scorer's or writer's exception retrieved, and log a failure now rather than at the next batch.

    It is raised again to the agent at its next ``submit`` (or ``written``); a stop while the agent waits
    for records is seen by nobody else, and asyncio would log it as lost (what it stopped is withheld and
    logged where it happened).
    """
    if task.cancelled():
        return
    failure = task.exception()
    if failure is not None and not isinstance(failure, StopRequested):
        log.error("%s failed: %r; the batches in it stay uncommitted", task.get_name(), failure)


def withhold_acks(events: Sequence[EventT]) -> None:
    """Mark events as acked *without* recording their offsets, so Faust will never commit them.

    Faust's shutdown waits until every fetched message is acked; a withheld one counts as acked for
    that wait, and an ack that comes later (a write that finished after all) is a no-op for it.
    """
    withhold_messages(event.message for event in events)


async def give_way(app: faust.App, events: Sequence[EventT]) -> None:
    """Stopping: leave the batch in hand, and whatever was fetched behind it, uncommitted.

    Faust's shutdown waits for every fetched message to be acked (``wait_empty``); withheld messages
    count as acked for that wait but their offsets are never recorded, so nothing past the last
    written batch is committed and the next worker scores them. Runs until Faust cancels the agent.
    """
    withhold_acks(events)
    log.warning("stopping: the batch in hand (%d records) and any fetched after it stay uncommitted", len(events))
    while True:
        withhold_messages(list(app.consumer.unacked))
        await asyncio.sleep(STOP_POLL_SECONDS)
