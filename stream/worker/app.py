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

import faust
from faust.types import EventT

from emostream.stream.kafka.codecs import register_codecs
from emostream.stream.kafka.faust_internals import EagerDeliveryApp, limit_fetch_wait
from emostream.stream.worker.config import WorkerSetup
from emostream.stream.worker.model_swap import ModelWatcher
from emostream.stream.worker.pipeline import BatchPipeline, WorkerParts, give_way, withhold_acks
from emostream.stream.worker.shutdown import StopRequested

log = logging.getLogger("emostream.worker")
STREAM_BUFFER_EVENTS = 65_536
STREAM_BUFFER_BYTES = 1 << 30  # what the buffered records may hold at most: their count is bounded to fit


def stream_buffer_events(max_record_bytes: int) -> int:
    """Records Faust may buffer ahead of the agent: as many as fit in ``STREAM_BUFFER_BYTES`` at the largest
    record size, from 4,096 (Faust's default) to 65,536 (16,384 at the default 64 KiB)."""
    return max(4_096, min(STREAM_BUFFER_EVENTS, STREAM_BUFFER_BYTES // max_record_bytes))


__all__ = ["WorkerParts", "create_app", "limit_fetch_wait"]


def create_app(setup: WorkerSetup, bootstrap: str, parts: WorkerParts, web_port: int) -> faust.App:
    """The worker's Faust app: the scoring agent on ``tweets``, its review and dead-letter topics, the model swap."""
    kafka, topics, batch = setup.kafka, setup.topics, setup.batch
    register_codecs()
    limit_fetch_wait(int(kafka.fetch_max_wait * 1000))
    app = EagerDeliveryApp(
        kafka.group_id,
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,  # acks=all: a review record is safe before its offset is committed
        broker_session_timeout=kafka.session_timeout,
        broker_heartbeat_interval=kafka.heartbeat_interval,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=kafka.partitions,
        topic_disable_leader=True,
        # Faust pauses a partition whose buffer passes this many events, and its fetcher then sleeps up to
        # a hard-coded 1 s before it asks again: from a backlog, the default 4,096 stalled the worker
        # 0.5-0.7 s per 10,000 tweets with data waiting at the broker (py-spy, worker log). Unacked
        # events are withheld at a stop (give_way), so a bigger buffer only means more re-delivery. Its
        # memory is bounded too: a record is at most max_record_bytes once it is buffered (larger ones are
        # cut on arrival), and the count is chosen so the buffer holds at most STREAM_BUFFER_BYTES.
        stream_buffer_maxsize=stream_buffer_events(setup.limits.max_record_bytes),
        max_record_bytes=setup.limits.max_record_bytes,
        web_enabled=True,
        web_host=setup.web.web_host,
        web_port=web_port,
        web_bind=setup.web.web_host,
        datadir=str(setup.home / "faust"),
    )
    tweets = app.topic(topics.topic_tweets, key_type=bytes, value_type=bytes, partitions=kafka.partitions)
    review = app.topic(topics.topic_review, value_serializer="emostream.review", partitions=kafka.partitions)
    dead_letters = app.topic(topics.topic_dlq, value_serializer="emostream.dead_letter", partitions=kafka.partitions)

    @app.agent(tweets, name="score-tweets")
    async def score_tweets(stream: faust.StreamT) -> None:
        pipeline = BatchPipeline(parts, review, dead_letters, ack=stream.ack)
        idle_since = time.perf_counter()
        events: Sequence[EventT] = ()
        try:
            # noack_take: events are acked by the pipeline once written, never by the stream itself
            async for events in stream.noack_take(batch.max_batch, within=batch.max_wait):  # type: ignore[attr-defined]  # faust's StreamT protocol lacks noack_take (faust-streaming 0.15)
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

    poll_interval = setup.worker.model_poll_interval
    if poll_interval > 0:  # hot swap: serve a promoted model version from the next batch on
        watcher = ModelWatcher(setup.runtime, setup.registry, parts.scorer)

        @app.task
        async def follow_model_registry() -> None:
            await watcher.run(poll_interval)

    app.review_topic, app.dead_letter_topic = review, dead_letters  # type: ignore[attr-defined]  # ours, for tests
    return app
