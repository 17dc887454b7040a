"""The Faust app: one agent that scores ``tweets`` in micro-batches.

Delivery is at-least-once with idempotent writes. The agent takes batches with ``noack_take`` and hands
them to :class:`emostream.stream.worker.pipeline.BatchPipeline`, which acks a batch's events only once its scores are in
ClickHouse and its review and dead-letter records are acknowledged by the broker (acks=all), while the
next batch is already being scored. Faust commits acked offsets only, so a crash before that point
re-delivers the batch, and the sink leaves out the rows that are already there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from emostream.schemas.settings import Settings
from emostream.stream.kafka.codecs import register_codecs
from emostream.stream.kafka.eager_delivery import EagerDeliveryApp
from emostream.stream.worker.model_swap import ModelWatcher
from emostream.stream.worker.pipeline import BatchPipeline, WorkerParts, give_way, withhold_acks
from emostream.stream.worker.shutdown import StopRequested
from faust.types import EventT

log = logging.getLogger("emostream.worker")
STREAM_BUFFER_EVENTS = 65_536
STREAM_BUFFER_BYTES = 1 << 30  # what the buffered records may hold at most: their count is bounded to fit


def stream_buffer_events(max_record_bytes: int) -> int:
    """Records Faust may buffer ahead of the agent: as many as fit in ``STREAM_BUFFER_BYTES`` at the largest
    record size, from 4,096 (Faust's default) to 65,536 (16,384 at the default 64 KiB)."""
    return max(4_096, min(STREAM_BUFFER_EVENTS, STREAM_BUFFER_BYTES // max_record_bytes))


__all__ = ["WorkerParts", "create_app", "limit_fetch_wait"]


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
    app = EagerDeliveryApp(
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
        # events are withheld at a stop (give_way), so a bigger buffer only means more re-delivery. Its
        # memory is bounded too: a record is at most max_record_bytes once it is buffered (larger ones are
        # cut on arrival), and the count is chosen so the buffer holds at most STREAM_BUFFER_BYTES.
        stream_buffer_maxsize=stream_buffer_events(settings.max_record_bytes),
        max_record_bytes=settings.max_record_bytes,
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
        pipeline = BatchPipeline(parts, review, dead_letters, ack=stream.ack)
        idle_since = time.perf_counter()
        events: Sequence[EventT] = ()
        try:
            # noack_take: events are acked by the pipeline once written, never by the stream itself
            async for events in stream.noack_take(parts.max_batch, within=settings.max_wait):
                try:
                    await pipeline.submit(events, time.perf_counter() - idle_since)
                    idle_since = time.perf_counter()
                except StopRequested:
                    pipeline.withhold()
                    await give_way(app, events)
        except asyncio.CancelledError:
            withhold_acks(events)
            pipeline.withhold()
            raise

    if settings.model_poll_interval > 0:  # hot swap: serve a promoted model version from the next batch on
        watcher = ModelWatcher(settings, parts.scorer)

        @app.task
        async def follow_model_registry() -> None:
            await watcher.run(settings.model_poll_interval)

    app.review_topic, app.dead_letter_topic = review, dead_letters  # type: ignore[attr-defined]
    return app
