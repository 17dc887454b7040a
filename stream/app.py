"""The Faust app: one agent that scores ``tweets`` in micro-batches.

Delivery is at-least-once with idempotent writes. ``take_events`` acks a batch's events only after the
agent's body has finished with it, and the body finishes only once the scores are in ClickHouse and the
review and dead-letter records are acknowledged by the broker (acks=all). Faust commits acked offsets
only, so a crash before that point re-delivers the batch, and ``emotion_scores`` (ReplacingMergeTree on
tweet id and model version) collapses the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from faust.types import EventT, Message

from schemas import DeadLetter, EmotionScore, ReviewItem
from schemas.settings import Settings
from stream.codecs import register_codecs
from stream.metrics import WorkerMetrics
from stream.model_swap import ModelWatcher
from stream.scoring import BatchScorer, RawRecord
from stream.shutdown import Shutdown, StopRequested
from stream.sink import ClickHouseSink

log = logging.getLogger("emostream.worker")
T = TypeVar("T")
STOP_POLL_SECONDS = 0.1
STREAM_BUFFER_EVENTS = 65_536


@dataclass
class WorkerParts:
    """What an agent needs besides Kafka: the scorer, the sink, one thread for their blocking calls, and
    the shutdown they must give way to."""

    scorer: BatchScorer
    sink: ClickHouseSink
    executor: ThreadPoolExecutor
    max_batch: int
    shutdown: Shutdown = field(default_factory=lambda: Shutdown(timeout=10.0))
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)  # this worker's own registry

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` on the worker's thread; gives up waiting (StopRequested) as soon as a stop is asked for."""
        return await self.unless_stopping(asyncio.get_running_loop().run_in_executor(self.executor, fn, *args))

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


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Cap the consumer's fetch long-poll, which faust-streaming hard-codes to 1,500 ms.

    Kafka answers a waiting fetch as soon as data arrives, but tansu holds it for the whole wait, so an
    idle-then-busy partition added ~0.75 s of latency on average. A short wait costs an idle worker a
    few extra fetch requests a second and nothing else.
    """
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "emostream_wait_ms", None) == max_wait_ms:
        return
    original = getattr(create, "emostream_original", create)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by consumer.start() when it builds its fetcher
        return consumer

    create_worker_consumer.emostream_wait_ms = max_wait_ms  # type: ignore[attr-defined]
    create_worker_consumer.emostream_original = original  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


def create_app(settings: Settings, bootstrap: str, parts: WorkerParts, web_port: int) -> faust.App:
    register_codecs()
    limit_fetch_wait(int(settings.fetch_max_wait * 1000))
    app = faust.App(
        settings.group_id,
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,  # acks=all: a review record is safe before its offset is committed
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        # Faust pauses a partition whose buffer passes this many events, and its fetcher then sleeps up to
        # a hard-coded 1 s before it asks again: from a backlog, the default 4,096 stalled the worker
        # 0.5-0.7 s per 10,000 tweets with data waiting at the broker (py-spy, worker log). Unacked
        # events are withheld at a stop (give_way), so a bigger buffer only means more re-delivery.
        stream_buffer_maxsize=STREAM_BUFFER_EVENTS,
        web_enabled=True,
        web_host=settings.web_host,
        web_port=web_port,
        web_bind=settings.web_host,
        datadir=str(settings.home / "faust"),
    )
    tweets = app.topic(settings.topic_tweets, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    review = app.topic(settings.topic_review, value_serializer="emostream.review", partitions=settings.partitions)
    dead_letters = app.topic(
        settings.topic_dlq, value_serializer="emostream.dead_letter", partitions=settings.partitions
    )

    @app.agent(tweets, name="score-tweets")
    async def score_tweets(stream: faust.StreamT) -> None:
        idle_since = time.perf_counter()
        async for events in stream.take_events(parts.max_batch, within=settings.max_wait):
            try:
                await process_batch(events, parts, review, dead_letters, time.perf_counter() - idle_since)
                idle_since = time.perf_counter()
            except StopRequested:
                await give_way(app, events)
            except asyncio.CancelledError:
                withhold_acks(events)
                raise

    if settings.model_poll_interval > 0:  # hot swap: serve a promoted model version from the next batch on
        watcher = ModelWatcher(settings, parts.scorer)

        @app.task
        async def follow_model_registry() -> None:
            await watcher.run(settings.model_poll_interval)

    app.review_topic, app.dead_letter_topic = review, dead_letters  # type: ignore[attr-defined]
    return app


async def process_batch(
    events: Sequence[EventT], parts: WorkerParts, review: faust.TopicT, dead_letters: faust.TopicT, waited: float = 0.0
) -> None:
    records = [
        RawRecord(
            e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value, e.message.timestamp
        )
        for e in events
    ]
    parts.metrics.batch_taken(len(records))
    started = time.perf_counter()
    result = await parts.run_blocking(parts.scorer.score, records)
    scored = time.perf_counter()
    await write_until_done(parts, result.scores, result.dead_letters, result.reviews)
    written, written_at = time.perf_counter(), time.time()
    deliveries = [await review.send(key=item.tweet.id.encode(), value=item) for item in result.reviews]
    deliveries += [await dead_letters.send(key=letter.source_key, value=letter) for letter in result.dead_letters]
    await parts.unless_stopping(asyncio.gather(*deliveries))  # each resolves once the broker has it (acks=all)
    # Counted only now, written and acknowledged, so the counters match the tables (a stop before this
    # point leaves the batch uncommitted and uncounted).
    parts.metrics.batch_done(
        size=len(records),
        scored=len(result.scores),
        dead_lettered=len(result.dead_letters),
        reviewed=len(result.reviews),
        model_seconds=scored - started,
        insert_seconds=written - scored,
        created_at=(score.created_at for score in result.scores),
        written_at=written_at,
    )
    log.info(
        "scored %d tweets (%d to review, %d dead letters): gathered %.3f s, model %.3f s, insert %.3f s, sends %.3f s",
        len(result.scores),
        len(result.reviews),
        len(result.dead_letters),
        waited,
        scored - started,
        written - scored,
        time.perf_counter() - written,
    )


async def write_until_done(
    parts: WorkerParts,
    scores: Sequence[EmotionScore],
    dead_letters: Sequence[DeadLetter] = (),
    reviews: Sequence[ReviewItem] = (),
    max_delay: float = 30.0,
) -> None:
    """Insert the batch (scores, dead letters, review items), retrying with back-off while ClickHouse is down.

    The worker neither drops the batch nor commits past it: it waits, and recovers by itself. A stop
    request ends the wait (StopRequested) and the batch stays uncommitted.
    """
    delay = 0.5
    while True:
        try:
            await parts.run_blocking(parts.sink.write, scores, dead_letters, reviews)
            return
        except StopRequested:
            raise
        except Exception as exc:
            log.warning("ClickHouse write of %d rows failed (%s); retrying in %.1f s", len(scores), exc, delay)
            await parts.sleep(delay)
            delay = min(delay * 2, max_delay)


def withhold_acks(events: Sequence[EventT]) -> None:
    """Mark events as acked *without* recording their offsets, so Faust will never commit them.

    ``take_events`` acks a batch in a ``finally`` even when the body was cancelled; a batch that is not
    in ClickHouse yet must not be committed, or a shutdown during a ClickHouse outage would lose it.
    """
    withhold_messages(event.message for event in events)


def withhold_messages(messages: Iterable[Message]) -> None:
    for message in messages:
        message.acked = True


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
