"""Leases: an item on one reviewer's screen is kept from the others for a short while. And skips.

Why leases and not locks: a reviewer who closes the tab never says so; a lease simply runs out
(``review_lease`` seconds, renewed each time the page asks for its items), and the item goes back to
the pool. Skipped items are given up at once, and not offered again to the session that skipped them
for ``SKIP_MEMORY`` seconds.

The book lives in the serving process: one review server per queue (the page is for a handful of
people; one process carries them easily). Several servers would each keep their own book, and two
reviewers on different servers could then get the same item: the label history would keep both.

Everything here is bounded, whatever the callers do. Anyone with the review token can open as many
sessions as they like (each page load with ``?token=`` is one), so without bounds made-up sessions
could lease the whole queue and keep it from an honest reviewer, or grow the process with skips:

- a session holds at most ``LEASES_PER_SESSION`` items (50: the largest window the API hands out, the
  page asks for 10); taking more is refused for the surplus;
- at most ``LEASE_HOLDERS`` sessions (16) hold leases at once: a handful of people, a couple of tabs
  each. A session that asks for items while 16 others hold some evicts the one that renewed least
  recently (all of its leases go back to the pool), so at most 16 x 50 = 800 items are ever leased. An
  active page renews every 15 s, so the sessions evicted are the idle ones first;
- a fair share: 10 sessions of 50 hold a queue of 475 items between them, so a session that finds too
  few free items takes over leases from the others (:meth:`LeaseBook.reclaim`), one at a time from the
  session that holds the most, while that one holds at least two more than the taker, from the end of
  its window (the item it shows now was leased first and goes last). So a newcomer gets items whenever
  any are pending, however many sessions lease them, and two honest reviewers of a short queue split it
  (8 items, 10 asked for each: 4 and 4) instead of taking it from each other at every refresh;
- a session remembers at most ``SKIPS_PER_SESSION`` skips (1,000) and the book ``SKIPS`` (10,000) in
  all, the oldest forgotten first (a forgotten skip only means the item may come back to that session).
  With ids of at most ``emostream.schemas.messages.TWEET_ID_MAX_CHARS`` characters (the web layer refuses longer
  ones before anything is stored) and 64-character text hashes that is a few MB at worst. A session's
  skips travel with each of its queries (excluded items), which is what bounds them per session.

Keys are items, ``(tweet_id, text_sha256)`` (any hashable key works: the unit tests use strings).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable

SKIP_MEMORY = 3600.0  # seconds a skipped item stays out of the skipping session's queue
LEASES_PER_SESSION = 50
LEASE_HOLDERS = 16
SKIPS_PER_SESSION = 1000
SKIPS = 10_000


class LeaseBook:
    """Who holds which review item until when, and which items each session skipped; bounded (see the module)."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        per_session: int = LEASES_PER_SESSION,
        holders: int = LEASE_HOLDERS,
        skips_per_session: int = SKIPS_PER_SESSION,
        skips: int = SKIPS,
    ) -> None:
        self.ttl = ttl
        self.per_session = per_session
        self.holders = holders
        self.skips_per_session = skips_per_session
        self.skips = skips
        self._clock = clock
        self._leases: dict[Hashable, tuple[str, float]] = {}  # item -> (session, expiry)
        self._renewed: dict[str, float] = {}  # session -> when it last took or renewed a lease
        # skips, oldest first: all of them, and per session
        self._skip_order: OrderedDict[tuple[str, Hashable], float] = OrderedDict()  # (session, item) -> forget at
        self._skipped: dict[str, OrderedDict[Hashable, float]] = {}

    def held_by_others(self, owner: str) -> set[Hashable]:
        """Items leased to any session but ``owner`` (expired leases dropped first): to keep off its screen."""
        self._expire(self._clock())
        return {item for item, (holder, _) in self._leases.items() if holder != owner}

    def held_by(self, owner: str) -> list[Hashable]:
        """The owner's live leases, oldest first (a lease taken over by :meth:`reclaim` counts as new)."""
        self._expire(self._clock())
        return [item for item, (holder, _) in self._leases.items() if holder == owner]

    def holder(self, item: Hashable) -> str | None:
        """The session that holds a live lease on the item, or None when it is free."""
        self._expire(self._clock())
        lease = self._leases.get(item)
        return lease[0] if lease else None

    def lease_count(self) -> int:
        """How many items are leased now, to all sessions (expired leases not counted)."""
        self._expire(self._clock())
        return len(self._leases)

    def holders_now(self) -> set[str]:
        """The sessions that hold at least one live lease."""
        self._expire(self._clock())
        return {holder for holder, _ in self._leases.values()}

    def enter(self, owner: str) -> list[str]:
        """Make room for ``owner`` among the lease holders: if ``LEASE_HOLDERS`` others hold leases
        already, the least recently renewed are evicted (their leases given back). Returns them."""
        holders = self.holders_now()
        if owner in holders:
            return []
        evicted = []
        others = sorted(holders, key=lambda h: self._renewed.get(h, float("-inf")))
        while len(others) >= self.holders:
            victim = others.pop(0)
            for item in [i for i, (h, _) in self._leases.items() if h == victim]:
                del self._leases[item]
            self._renewed.pop(victim, None)
            evicted.append(victim)
        return evicted

    def take(self, owner: str, items: Iterable[Hashable]) -> list[Hashable]:
        """Lease (or renew) the items that are free or already the owner's, up to ``LEASES_PER_SESSION``
        for the owner in all; returns those granted. Makes room among the holders first (:meth:`enter`)."""
        self.enter(owner)
        now = self._clock()
        held = sum(1 for holder, _ in self._leases.values() if holder == owner)
        granted = []
        for item in items:
            lease = self._leases.get(item)
            if lease is not None and lease[0] != owner:
                continue
            if lease is None:
                if held >= self.per_session:
                    continue
                held += 1
            self._leases[item] = (owner, now + self.ttl)
            granted.append(item)
        if granted:
            self._renewed[owner] = now
        return granted

    def reclaim(self, owner: str, candidates: Iterable[Hashable], want: int) -> list[Hashable]:
        """Take over up to ``want`` of the ``candidates`` (items other sessions hold that the owner could
        use) for a fair share: each from the session that holds the most (the least recently renewed
        first among equals), while it holds at least two more than the owner, from the end of its window.
        Returns the items now leased to the owner."""
        self._expire(self._clock())
        usable = set(candidates)
        counts: dict[str, int] = {}
        theirs: dict[str, list[Hashable]] = {}  # holder -> its candidate items, in the order it leased them
        for item, (holder, _) in self._leases.items():
            counts[holder] = counts.get(holder, 0) + 1
            if holder != owner and item in usable:
                theirs.setdefault(holder, []).append(item)
        mine = counts.get(owner, 0)
        want = min(want, self.per_session - mine)
        now = self._clock()
        taken: list[Hashable] = []
        while len(taken) < want:
            victims = [h for h, items in theirs.items() if items]
            if not victims:
                break
            victim = max(victims, key=lambda h: (counts[h], -self._renewed.get(h, float("-inf"))))
            if counts[victim] <= mine + 1:
                break
            item = theirs[victim].pop()
            counts[victim] -= 1
            mine += 1
            del self._leases[item]  # re-inserted: at the end of the owner's window
            self._leases[item] = (owner, now + self.ttl)
            taken.append(item)
        if taken:
            self._renewed[owner] = now
        return taken

    def release(self, owner: str, item: Hashable) -> None:
        """Give the item back to the pool, if the owner holds it (another session's lease is left alone)."""
        if self._leases.get(item, ("", 0.0))[0] == owner:
            del self._leases[item]

    def release_all_but(self, owner: str, keep: set[Hashable]) -> None:
        """Give back every item the owner holds except those in ``keep`` (what its page still shows)."""
        for item in self.held_by(owner):
            if item not in keep:
                del self._leases[item]

    def skip(self, owner: str, item: Hashable) -> None:
        """Give the item up and keep it out of the owner's queue for a while; the oldest skips are
        forgotten first when the owner's or the book's bound is reached."""
        self.release(owner, item)
        self._forget_expired(self._clock())
        mine = self._skipped.setdefault(owner, OrderedDict())
        mine.pop(item, None)
        self._skip_order.pop((owner, item), None)
        forget_at = self._clock() + SKIP_MEMORY
        mine[item] = forget_at
        self._skip_order[(owner, item)] = forget_at
        while len(mine) > self.skips_per_session:
            oldest, _ = mine.popitem(last=False)
            del self._skip_order[(owner, oldest)]
        while len(self._skip_order) > self.skips:
            (who, oldest), _ = self._skip_order.popitem(last=False)
            self._drop_skip(who, oldest)

    def skipped(self, owner: str) -> set[Hashable]:
        """Items the owner skipped less than ``SKIP_MEMORY`` seconds ago: to leave out of its queue."""
        self._forget_expired(self._clock())
        return set(self._skipped.get(owner, ()))

    def skip_count(self) -> int:
        """How many skips the book remembers, all sessions together (expired ones may still be counted)."""
        return len(self._skip_order)

    def _drop_skip(self, owner: str, item: Hashable) -> None:
        mine = self._skipped.get(owner)
        if mine is not None:
            mine.pop(item, None)
            if not mine:
                del self._skipped[owner]

    def _forget_expired(self, now: float) -> None:
        # Oldest first, and a re-skip moves to the end with a later time: the front expires first.
        while self._skip_order:
            (owner, item), forget_at = next(iter(self._skip_order.items()))
            if forget_at > now:
                break
            del self._skip_order[(owner, item)]
            self._drop_skip(owner, item)

    def _expire(self, now: float) -> None:
        for item in [i for i, (_, expiry) in self._leases.items() if expiry <= now]:
            del self._leases[item]
        if len(self._renewed) > 2 * self.holders:  # sessions that hold nothing any more
            live = {holder for holder, _ in self._leases.values()}
            for owner in [o for o in self._renewed if o not in live]:
                del self._renewed[owner]
