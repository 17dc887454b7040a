"""What the review pages do, independent of HTTP: the next items, a label, an undo, a skip, the trends.

ClickHouse calls block, so they run on one thread of the service's own (never the worker's scoring
thread, never the event loop). A label is durable before :meth:`ReviewService.label` returns: produced
to ``tweets.labels`` with acks=all, then written to ``review_labels``; if either fails, the caller gets
the error and the page says the label was not saved.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from schemas import ReviewLabel
from schemas.messages import utc_now
from schemas.settings import Settings
from stream.auth import Principal
from stream.ingest import start_producer
from stream.review.leases import LeaseBook
from stream.review.queue import QueueItem, ReviewQueue
from stream.sql import ReadOnlySql
from stream.trends import Bucket, Trends

T = TypeVar("T")
WINDOW_MAX = 50  # items one page may hold at once


class ReviewError(Exception):
    """A request the queue cannot honour, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def owner_of(principal: Principal) -> str:
    """Who holds leases: a browser session, or a program by its reviewer name."""
    return principal.session.nonce if principal.session else f"bearer:{principal.reviewer}"


class ReviewService:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.leases = LeaseBook(settings.review_lease)
        self.queue = ReviewQueue(settings.resolved_clickhouse_dsn())
        self.queue.sink.apply_schema()
        self.sql = ReadOnlySql(settings)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="emostream-review")
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # One label per send, awaited: no lingering. Without idempotence (the embedded broker) a retried
        # send can repeat a label event; the history keeps events, and the latest one still decides.
        self._producer = await start_producer(self.bootstrap, linger_ms=0, refusal_level=logging.INFO)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._thread.shutdown(wait=True)
        self.queue.close()
        self.sql.close()

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def window(self, principal: Principal, limit: int, brand: str = "", label: str = "") -> dict[str, Any]:
        """The caller's next items (leased to it, renewed) and the queue's counts."""
        owner = owner_of(principal)
        limit = max(1, min(limit, WINDOW_MAX))
        exclude = self.leases.held_by_others(owner) | self.leases.skipped(owner)
        mine = self.leases.held_by(owner)
        items = await self._blocking(self.queue.pending, limit, brand, label, sorted(exclude), mine)
        granted = set(self.leases.take(owner, [item.tweet_id for item in items]))
        self.leases.release_all_but(owner, granted)
        counts = await self._blocking(self.queue.counts, principal.reviewer)
        return {
            "items": [item.as_json() for item in items if item.tweet_id in granted],
            "counts": counts.as_json(brand, label),
            "lease_seconds": self.settings.review_lease,
        }

    async def label(self, principal: Principal, tweet_id: str, label: str) -> ReviewLabel:
        item = await self._item(tweet_id)
        holder = self.leases.holder(tweet_id)
        if holder is not None and holder != owner_of(principal):
            raise ReviewError(409, f"tweet_id: {tweet_id!r} is on another reviewer's screen; it was not labelled")
        record = ReviewLabel(
            tweet_id=tweet_id,
            label=label,
            reviewer=principal.reviewer,
            model_version=item.model_version,
            confidence=item.confidence,
        )
        await self._publish(record)
        self.leases.release(owner_of(principal), tweet_id)
        return record

    async def undo(self, principal: Principal, tweet_id: str) -> QueueItem:
        """Withdraw the caller's current label of a tweet; the tweet is pending again, on the caller's screen."""
        current = await self._blocking(self.queue.current_label, tweet_id)
        if current is None or current.retracted:
            raise ReviewError(409, f"tweet_id: {tweet_id!r} has no label to undo")
        if current.reviewer != principal.reviewer:
            raise ReviewError(409, f"tweet_id: the current label of {tweet_id!r} is {current.reviewer}'s, not yours")
        later = max(utc_now(), current.labelled_at + timedelta(milliseconds=1))  # the retraction must sort last
        await self._publish(current.model_copy(update={"retracted": True, "labelled_at": later}))
        self.leases.take(owner_of(principal), [tweet_id])
        return await self._item(tweet_id)

    async def skip(self, principal: Principal, tweet_id: str) -> None:
        self.leases.skip(owner_of(principal), tweet_id)

    async def _item(self, tweet_id: str) -> QueueItem:
        item = await self._blocking(self.queue.item, tweet_id)
        if item is None:
            raise ReviewError(404, f"tweet_id: {tweet_id!r} is not in the review queue")
        return item

    async def _publish(self, record: ReviewLabel) -> None:
        if self._producer is None:
            raise ReviewError(503, "the review service is not started")
        await self._producer.send_and_wait(
            self.settings.topic_labels, key=record.tweet_id.encode(), value=record.model_dump_json().encode()
        )
        await self._blocking(self.queue.write_label, record)

    async def trends(self, by: Bucket, since_seconds: int, brand: str | None) -> Trends:
        return await self._blocking(Trends.load, self.sql.query, by, since_seconds, brand)

    async def trend_brands(self) -> list[str]:
        result = await self._blocking(
            self.sql.query, "SELECT DISTINCT brand FROM emotion_trends_minute ORDER BY brand LIMIT 1000"
        )
        return [str(row[0]) for row in result.rows]

    async def chart(self, trends: Trends, title: str) -> bytes:
        def draw() -> bytes:
            buffer = io.BytesIO()
            trends.plot(buffer, title)
            return buffer.getvalue()

        return await self._blocking(draw)
