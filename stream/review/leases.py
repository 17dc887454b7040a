"""Leases: an item on one reviewer's screen is kept from the others for a short while.

Why leases and not locks: a reviewer who closes the tab never says so; a lease simply runs out
(``review_lease`` seconds, renewed each time the page asks for its items), and the item goes back to
the pool. Skipped items are given up at once, and not offered again to the session that skipped them.

The book lives in the serving process: one review server per queue (the page is for a handful of
people; one process carries them easily). Several servers would each keep their own book, and two
reviewers on different servers could then get the same item: the label history would keep both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

SKIP_MEMORY = 3600.0  # seconds a skipped item stays out of the skipping session's queue


class LeaseBook:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}  # tweet id -> (session, expiry)
        self._skipped: dict[str, dict[str, float]] = {}  # session -> tweet id -> forget at

    def held_by_others(self, owner: str) -> set[str]:
        now = self._clock()
        self._expire(now)
        return {tweet for tweet, (holder, _) in self._leases.items() if holder != owner}

    def held_by(self, owner: str) -> list[str]:
        now = self._clock()
        self._expire(now)
        return [tweet for tweet, (holder, _) in self._leases.items() if holder == owner]

    def holder(self, tweet_id: str) -> str | None:
        self._expire(self._clock())
        lease = self._leases.get(tweet_id)
        return lease[0] if lease else None

    def take(self, owner: str, tweet_ids: Iterable[str]) -> list[str]:
        """Lease (or renew) the items that are free or already the owner's; returns those granted."""
        now = self._clock()
        self._expire(now)
        granted = []
        for tweet in tweet_ids:
            holder = self._leases.get(tweet)
            if holder is None or holder[0] == owner:
                self._leases[tweet] = (owner, now + self.ttl)
                granted.append(tweet)
        return granted

    def release(self, owner: str, tweet_id: str) -> None:
        if self._leases.get(tweet_id, ("", 0.0))[0] == owner:
            del self._leases[tweet_id]

    def release_all_but(self, owner: str, keep: set[str]) -> None:
        for tweet in self.held_by(owner):
            if tweet not in keep:
                del self._leases[tweet]

    def skip(self, owner: str, tweet_id: str) -> None:
        self.release(owner, tweet_id)
        self._skipped.setdefault(owner, {})[tweet_id] = self._clock() + SKIP_MEMORY

    def skipped(self, owner: str) -> set[str]:
        now = self._clock()
        mine = self._skipped.get(owner, {})
        for tweet in [t for t, until in mine.items() if until <= now]:
            del mine[tweet]
        return set(mine)

    def _expire(self, now: float) -> None:
        for tweet in [t for t, (_, expiry) in self._leases.items() if expiry <= now]:
            del self._leases[tweet]
