"""What the review pages do, independent of HTTP: the next items, a label, an undo, a skip, the trends.

ClickHouse calls block, so they run on one thread of the service's own (never the worker's scoring
thread, never the event loop). A label is durable before :meth:`ReviewService.label` returns: produced
to ``tweets.labels`` with acks=all, then written to ``review_labels``; if either fails, the caller gets
the error and the page says the label was not saved.

The rules a label and an undo follow (the caller is ``principal.reviewer``, which the server bound to
the credential or session, see ``emostream.stream.web.auth``; nothing in a request can change it):

- a label names its item, ``(tweet_id, text_sha256)``: the hash of the text the reviewer was shown. If
  the queue holds that id but not that text, the text changed since it was shown and the label is
  refused (409); a label is never moved to a text nobody saw;
- each reviewer gives at most one opinion of an item: relabelling one's own is allowed (the latest event
  counts), and the opinions of others are kept beside it, never replaced. An item done (it has
  ``review_opinions`` opinions, or an adjudicator settled it) takes no new opinion (409): with one opinion
  per item (the default) the first reviewer's label stands;
- an undo withdraws only the caller's own opinion of an item (409 otherwise);
- an item on another session's screen (leased to it) is not labelled by anyone else (409). Leases stay
  exclusive with several opinions per item: one screen at a time, and once a reviewer has labelled it the
  item goes to the next reviewer who has not; with a queue longer than the team, nobody waits;
- nothing the page gets shows another reviewer's opinion: each gives theirs blind. Only adjudicators (and
  the operator) see the opinions of a disputed item, to settle it (:meth:`ReviewService.settle`).

Label and undo run one at a time (a lock around check-and-write), so two requests cannot both find an
item unlabelled and both write: the second sees the first's label.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from emostream.schemas.messages import utc_now
from emostream.stream.clickhouse.sql import ReadOnlySql
from emostream.stream.clickhouse.trends import Bucket, Trends
from emostream.stream.kafka.ingest import start_producer
from emostream.stream.review.agreement import team_agreement
from emostream.stream.review.config import ReviewSetup
from emostream.stream.review.gold import GOLD_MIN_ANSWERS, gold_draws, mix_gold
from emostream.stream.review.leases import LEASES_PER_SESSION, LeaseBook
from emostream.stream.review.queue import Disagreement, QueueItem, ReviewQueue, ShownLabel
from emostream.stream.web.auth import Principal
from emostream.stream.web.reviewers import (
    Reviewer,
    ReviewerDirectory,
    ReviewerError,
    ReviewerExists,
    ReviewerStore,
    UnknownReviewer,
)

T = TypeVar("T")
WINDOW_MAX = LEASES_PER_SESSION  # items one page may hold at once


class ReviewError(Exception):
    """A request the queue cannot honour, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def owner_of(principal: Principal) -> str:
    """Who holds leases: a browser session, or a program by its credential's reviewer."""
    return principal.session.nonce if principal.session else f"bearer:{principal.scope}:{principal.reviewer}"


class ReviewService:
    """The review queue's operations for the pages: windows of leased items, labels, undo, skips, trends."""

    def __init__(self, setup: ReviewSetup, bootstrap: str) -> None:
        self.setup = setup
        self.bootstrap = bootstrap
        self.leases = LeaseBook(setup.review.review_lease)
        self.queue = ReviewQueue(setup.dsn, setup.review.review_opinions)
        self.queue.apply_schema()
        self.reviewers = ReviewerDirectory(ReviewerStore(setup.dsn))  # asked by the guard for personal tokens
        self.sql = ReadOnlySql(setup.query_dsn, setup.sql)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="emostream-review")
        self._producer: AIOKafkaProducer | None = None
        self._writing = asyncio.Lock()
        self._rng = random.Random()  # which window slots are gold questions

    async def start(self) -> None:
        """Start the producer that sends labels to ``tweets.labels``; labels are refused (503) until then."""
        # One label per send, awaited: no lingering. Without idempotence (the embedded broker) a retried
        # send can repeat a label event; the history keeps events, and the latest one still decides.
        self._producer = await start_producer(self.bootstrap, linger_ms=0, refusal_level=logging.INFO)

    async def stop(self) -> None:
        """Stop the producer, wait for the ClickHouse thread's work to finish, and close the queue's and SQL clients."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._thread.shutdown(wait=True)
        self.reviewers.close()
        self.queue.close()
        self.sql.close()

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def window(self, principal: Principal, limit: int, brand: str = "", label: str = "") -> dict[str, Any]:
        """The caller's next items (leased to it, renewed) and the queue's counts.

        Free items first; if there are too few, a fair share of what other sessions hold (see
        ``leases``), so that no number of sessions can keep the queue from this one."""
        owner = owner_of(principal)
        limit = max(1, min(limit, WINDOW_MAX))
        self.leases.enter(owner)  # before the query: what an evicted session held is offered here
        skipped = self.leases.skipped(owner)
        others = self.leases.held_by_others(owner)
        mine = self.leases.held_by(owner)
        reviewer = principal.reviewer
        items = await self._blocking(self.queue.pending, reviewer, limit, brand, label, sorted(others | skipped), mine)
        granted = self.leases.take(owner, [item.key for item in items])
        items = [item for item in items if item.key in set(granted)]
        others = self.leases.held_by_others(owner) - skipped
        if len(items) < limit and others:
            held = await self._blocking(
                self.queue.pending, reviewer, len(others), brand, label, sorted(skipped), (), sorted(others)
            )
            reclaimed = set(self.leases.reclaim(owner, [item.key for item in held], limit - len(items)))
            items += [item for item in held if item.key in reclaimed]
        if self.setup.review.review_gold_rate > 0:
            items = await self._with_gold(owner, reviewer, items, mine, others | skipped, limit, brand, label)
        self.leases.release_all_but(owner, {item.key for item in items})
        counts = await self._blocking(self.queue.counts, principal.reviewer)
        return {
            "items": [item.as_json() for item in items],
            "counts": counts.as_json(brand, label),
            "lease_seconds": self.setup.review.review_lease,
        }

    async def _with_gold(
        self,
        owner: str,
        reviewer: str,
        items: list[QueueItem],
        mine: list[Any],
        unavailable: set[Any],
        limit: int,
        brand: str,
        label: str,
    ) -> list[QueueItem]:
        """The window with gold questions mixed in (``emostream.stream.review.gold``): those already on the
        screen keep their places, and each free slot is one with probability ``review_gold_rate``."""
        held_keys = set(mine)
        held_gold = (
            await self._blocking(self.queue.gold_pending, reviewer, len(mine), brand, label, (), mine) if mine else []
        )
        self.leases.take(owner, [item.key for item in held_gold])  # renewed, as the queue's items are
        new = [item for item in items if item.key not in held_keys]
        held_count = len(items) - len(new) + len(held_gold)
        wanted = gold_draws(max(0, limit - held_count), self.setup.review.review_gold_rate, self._rng)
        fresh: list[QueueItem] = []
        if wanted:
            fresh = await self._blocking(
                self.queue.gold_pending, reviewer, wanted, brand, label, sorted(unavailable | held_keys)
            )
            granted = set(self.leases.take(owner, [item.key for item in fresh]))
            fresh = [item for item in fresh if item.key in granted]
        order = {key: i for i, key in enumerate(mine)}
        held = sorted([item for item in items if item.key in held_keys] + held_gold, key=lambda i: order[i.key])
        return mix_gold(held, new, fresh, limit, self._rng)

    async def label(self, principal: Principal, tweet_id: str, sha256: str, label: str) -> ShownLabel:
        """Save the caller's label of the item it was shown, durable on return; 409 per the module's rules."""
        async with self._writing:
            item = await self._item(tweet_id, sha256)
            holder = self.leases.holder(item.key)
            if holder is not None and holder != owner_of(principal):
                raise ReviewError(409, f"tweet_id: {tweet_id!r} is on another reviewer's screen; it was not labelled")
            if await self._blocking(self.queue.settled, tweet_id, sha256):
                raise ReviewError(409, f"tweet_id: {tweet_id!r} was settled by an adjudicator; that label stands")
            current = await self._blocking(self.queue.current_label, tweet_id, sha256, principal.reviewer)
            if current is None or current.retracted:  # a new opinion: only while the item wants more
                await self._wants_opinions(item)
            record = ShownLabel(
                tweet_id=tweet_id,
                text_sha256=sha256,
                label=label,
                reviewer=principal.reviewer,
                labelled_at=_after(current),
                model_version=item.model_version,
                confidence=item.confidence,
            )
            await self._publish(record)
        self.leases.release(owner_of(principal), item.key)
        return record

    async def undo(self, principal: Principal, tweet_id: str, sha256: str) -> QueueItem:
        """Withdraw the caller's current label of an item; it is pending again, on the caller's screen."""
        async with self._writing:
            item = await self._item(tweet_id, sha256)
            current = await self._blocking(self.queue.current_label, tweet_id, sha256, principal.reviewer)
            if current is None or current.retracted:
                others = await self._blocking(self.queue.opinions_of, tweet_id, sha256)
                if others:
                    names = ", ".join(o.reviewer for o in others)
                    raise ReviewError(409, f"tweet_id: the current label of {tweet_id!r} is {names}'s, not yours")
                raise ReviewError(409, f"tweet_id: {tweet_id!r} has no label to undo")
            if await self._blocking(self.queue.settled, tweet_id, sha256):
                raise ReviewError(409, f"tweet_id: {tweet_id!r} was settled by an adjudicator; nothing was undone")
            await self._publish(current.model_copy(update={"retracted": True, "labelled_at": _after(current)}))
        self.leases.take(owner_of(principal), [item.key])
        return item

    async def _wants_opinions(self, item: QueueItem) -> None:
        """409 unless the item may take another opinion: it has fewer than ``review_opinions``."""
        opinions = await self._blocking(self.queue.opinions_of, *item.key)
        if len(opinions) >= self.queue.opinions:
            names = ", ".join(o.reviewer for o in opinions)
            raise ReviewError(409, f"tweet_id: {item.tweet_id!r} is already labelled by {names}; that label stands")

    async def disagreements(self, principal: Principal, limit: int) -> list[Disagreement]:
        """Disputed items with their opinions, for an adjudicator (403 for anyone else)."""
        self._adjudicator(principal)
        return await self._blocking(self.queue.disagreements, max(1, min(limit, 500)))

    async def settle(self, principal: Principal, tweet_id: str, sha256: str, label: str) -> str:
        """An adjudicator settles a disputed item with ``label``; returns the decision it replaced (409 for an
        item that is not disputed or settled already: a majority, once reached, is not overruled here)."""
        self._adjudicator(principal)
        async with self._writing:
            item = await self._item(tweet_id, sha256)
            decided = await self._blocking(self.queue.decision, *item.key)
            if decided is None or decided[0] not in ("disputed", "adjudicated"):
                state = "has no opinions yet" if decided is None else f"is decided already ({decided[0]})"
                raise ReviewError(409, f"tweet_id: {tweet_id!r} {state}; only disputed items are settled")
            await self._blocking(self.queue.settle, tweet_id, sha256, label, principal.reviewer, _after(None))
        return decided[0]

    @staticmethod
    def _adjudicator(principal: Principal) -> None:
        if not principal.adjudicates:
            raise ReviewError(403, "only an adjudicator (or the operator) settles disagreements")

    async def team(self) -> dict[str, Any]:
        """The team page's figures: agreement overall, per label, per reviewer and per pair, and the queue's
        disputed items (their count only: the opinions are in :meth:`disagreements`)."""

        def read() -> dict[str, Any]:
            figures = team_agreement(self.queue.client).as_json()
            disputed = self.queue.client.query(
                "SELECT countIf(decision = 'disputed'), countIf(decision = 'adjudicated') FROM review_decisions"
            ).result_rows[0]
            floor = self.setup.review.review_gold_min_accuracy
            gold = [
                {
                    "reviewer": reviewer,
                    "answered": answered,
                    "correct": correct,
                    "accuracy": accuracy,
                    "weight": weight,
                    "flagged": answered >= GOLD_MIN_ANSWERS and accuracy < floor,
                }
                for reviewer, answered, correct, accuracy, weight in self.queue.gold_accuracy()
            ]
            questions = self.queue.client.query("SELECT count() FROM review_gold FINAL").result_rows[0][0]
            return {
                **figures,
                "opinions_per_item": self.queue.opinions,
                "disputed": int(disputed[0]),
                "adjudicated": int(disputed[1]),
                "gold": gold,
                "gold_questions": int(questions),
                "gold_rate": self.setup.review.review_gold_rate,
                "gold_min_accuracy": floor,
                "gold_min_answers": GOLD_MIN_ANSWERS,
            }

        return await self._blocking(read)

    async def add_gold(self, rows: list[list[Any]]) -> int:
        """Store gold questions (rows of ``review_gold``, scored by the operator's command); how many."""
        return await self._blocking(self.queue.add_gold, rows)

    async def reviewer_list(self) -> list[Reviewer]:
        """Every named reviewer, revoked ones too (the operator's)."""
        return await self._blocking(self.reviewers.store.reviewers)

    async def add_reviewer(self, name: str, role: Any, shared_name: str) -> tuple[Reviewer, str]:
        """A named reviewer and their token (shown once); 400 for a bad name or role, 409 for a name in use
        (by a live reviewer, or by the shared tokens' ``shared_name``: their labels would be one name)."""
        if name.strip() == shared_name:
            raise ReviewError(409, f"{name!r} is the shared review token's name (EMOSTREAM_REVIEWER): choose another")
        try:
            added = await self._blocking(self.reviewers.store.add, name, role)
        except ReviewerError as exc:
            raise ReviewError(409 if isinstance(exc, ReviewerExists) else 400, str(exc)) from None
        self.reviewers.invalidate()
        return added

    async def revoke_reviewer(self, name: str) -> Reviewer:
        """Revoke a named reviewer: their token and sessions stop working from the next request. 404: no such one."""
        try:
            revoked = await self._blocking(self.reviewers.store.revoke, name)
        except ReviewerError as exc:
            raise ReviewError(404 if isinstance(exc, UnknownReviewer) else 400, str(exc)) from None
        self.reviewers.invalidate()
        return revoked

    async def skip(self, principal: Principal, tweet_id: str, sha256: str) -> None:
        """Only items in the queue are remembered as skipped (and only so many, see ``leases``)."""
        item = await self._item(tweet_id, sha256)
        self.leases.skip(owner_of(principal), item.key)

    async def _item(self, tweet_id: str, sha256: str) -> QueueItem:
        item = await self._blocking(self.queue.item, tweet_id, sha256)
        if item is not None:
            return item
        if await self._blocking(self.queue.texts, tweet_id):
            raise ReviewError(
                409,
                f"text_sha256: the text of {tweet_id!r} changed since it was shown (it was sent again with "
                "other text, which is a new item to review); nothing was saved",
            )
        raise ReviewError(404, f"tweet_id: {tweet_id!r} is not in the review queue")

    async def _publish(self, record: ShownLabel) -> None:
        if self._producer is None:
            raise ReviewError(503, "the review service is not started")
        await self._producer.send_and_wait(
            self.setup.labels_topic, key=record.tweet_id.encode(), value=record.model_dump_json().encode()
        )
        await self._blocking(self.queue.write_label, record)

    async def trends(self, by: Bucket, since_seconds: int, brand: str | None) -> Trends:
        """Emotion shares per ``by`` bucket over the last ``since_seconds``, of one brand or all (read-only SQL)."""
        return await self._blocking(Trends.load, self.sql.query, by, since_seconds, brand)

    async def trend_brands(self) -> list[str]:
        """The brands the trends know, sorted (at most 1,000): the trends page's brand choices."""
        result = await self._blocking(
            self.sql.query, "SELECT DISTINCT brand FROM emotion_trends_minute ORDER BY brand LIMIT 1000"
        )
        return [str(row[0]) for row in result.rows]

    async def chart(self, trends: Trends, title: str) -> bytes:
        """The trends drawn as a PNG, on the service's thread (drawing blocks)."""

        def draw() -> bytes:
            buffer = io.BytesIO()
            trends.plot(buffer, title)
            return buffer.getvalue()

        return await self._blocking(draw)


def _after(current: ShownLabel | None) -> Any:
    """Now, or just after the item's latest event: the newest event must sort last (argMax by time), at
    the millisecond the column keeps."""
    now = utc_now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    return now if current is None else max(now, current.labelled_at + timedelta(milliseconds=1))
