"""Leases keep reviewers off each other's items, within bounds whatever the callers do; on a fake clock."""

from __future__ import annotations

from emostream.stream.review.leases import (
    LEASE_HOLDERS,
    LEASES_PER_SESSION,
    SKIP_MEMORY,
    SKIPS,
    SKIPS_PER_SESSION,
    LeaseBook,
)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_item_on_one_screen_is_kept_from_the_others_until_the_lease_runs_out() -> None:
    clock = Clock()
    book = LeaseBook(ttl=120, clock=clock)
    assert book.take("ana", ["t1", "t2"]) == ["t1", "t2"]
    assert book.take("bo", ["t2", "t3"]) == ["t3"]  # t2 is on ana's screen
    assert book.held_by_others("bo") == {"t1", "t2"}
    assert book.holder("t2") == "ana"
    clock.now = 100
    assert book.take("ana", ["t1"]) == ["t1"]  # renewed
    assert book.take("bo", ["t3"]) == ["t3"]
    clock.now = 130  # t2 ran out (ana closed the tab), t1 was renewed
    assert book.holder("t2") is None and book.holder("t1") == "ana"
    assert book.take("bo", ["t2"]) == ["t2"]
    book.release("ana", "t2")  # not ana's any more: nothing happens
    assert book.holder("t2") == "bo"
    book.release_all_but("bo", {"t3"})
    assert book.held_by("bo") == ["t3"]


def test_items_are_keyed_by_id_and_text_so_two_texts_of_one_id_are_two_items() -> None:
    book = LeaseBook(ttl=120, clock=Clock())
    first, resent = ("t1", "a" * 64), ("t1", "b" * 64)
    assert book.take("ana", [first]) == [first]
    assert book.take("bo", [resent, first]) == [resent]
    book.skip("bo", resent)
    assert book.skipped("bo") == {resent} and book.holder(first) == "ana"


def test_a_skipped_item_goes_to_the_others_at_once_and_stays_away_from_the_skipper() -> None:
    clock = Clock()
    book = LeaseBook(ttl=120, clock=clock)
    book.take("ana", ["t1"])
    book.skip("ana", "t1")
    assert book.holder("t1") is None
    assert book.skipped("ana") == {"t1"} and book.skipped("bo") == set()
    clock.now = SKIP_MEMORY + 1
    assert book.skipped("ana") == set() and book.skip_count() == 0


def test_one_session_holds_at_most_a_window_of_items() -> None:
    book = LeaseBook(ttl=120, clock=Clock())
    items = [f"t{i}" for i in range(LEASES_PER_SESSION + 30)]
    assert book.take("greedy", items) == items[:LEASES_PER_SESSION]
    assert book.take("greedy", items) == items[:LEASES_PER_SESSION]  # renewing what it has, nothing more
    assert book.take("greedy", ["more"]) == []
    assert book.take("honest", items) == items[LEASES_PER_SESSION:]


def window(book: LeaseBook, owner: str, queue: list[str], n: int = LEASES_PER_SESSION) -> list[str]:
    """What the service does for a window: make room, offer what is free, then a fair share of what the
    others hold, lease it, drop the rest."""
    book.enter(owner)
    skipped, others, mine = book.skipped(owner), book.held_by_others(owner), book.held_by(owner)
    offered = (mine + [i for i in queue if i not in others and i not in skipped and i not in mine])[:n]
    items = book.take(owner, offered)
    others = book.held_by_others(owner) - skipped
    if len(items) < n and others:
        items += book.reclaim(owner, [i for i in queue if i in others], n - len(items))
    book.release_all_but(owner, set(items))
    return items  # type: ignore[return-value]


def test_thirty_made_up_sessions_cannot_keep_the_queue_from_an_honest_reviewer() -> None:
    """475 pending items (the issue's case), 30 sessions opened with the review token each lease a full
    window, and keep renewing them; an honest page that asks for 10 still gets 10, every time it asks."""
    clock = Clock()
    book = LeaseBook(ttl=120, clock=clock)
    queue = [f"t{i:03d}" for i in range(475)]
    for round_ in range(3):
        for n in range(30):
            clock.now += 0.1
            window(book, f"made-up-{n}", queue)
        assert len(book.holders_now()) <= LEASE_HOLDERS
        assert book.lease_count() <= LEASE_HOLDERS * LEASES_PER_SESSION
        clock.now += 0.1
        assert len(window(book, "honest", queue, n=10)) == 10, round_
        assert book.held_by("honest")


def test_two_reviewers_of_a_short_queue_split_it_and_keep_their_halves() -> None:
    clock = Clock()
    book = LeaseBook(ttl=120, clock=clock)
    queue = [f"t{i}" for i in range(8)]
    first = window(book, "ana", queue, n=10)
    assert first == queue
    clock.now += 1
    second = window(book, "bo", queue, n=10)
    assert len(second) == 4 and not set(second) & set(book.held_by("ana"))
    assert book.held_by("ana") == queue[:4]  # the end of ana's window moved: what she sees now stays
    for _ in range(3):  # refreshes take nothing from each other any more
        clock.now += 15
        assert window(book, "ana", queue, n=10) == queue[:4]
        assert sorted(window(book, "bo", queue, n=10)) == sorted(second)


def test_a_session_that_renews_keeps_its_place_and_the_idle_one_is_evicted() -> None:
    clock = Clock()
    book = LeaseBook(ttl=600, clock=clock, holders=3)
    for name in ("idle", "busy", "other"):
        clock.now += 1
        book.take(name, [f"{name}-1"])
    clock.now += 1
    book.take("busy", ["busy-1"])  # renewed: now "idle" is the least recently renewed
    assert book.enter("newcomer") == ["idle"]
    assert book.holder("idle-1") is None and book.holder("busy-1") == "busy"
    assert book.enter("busy") == []  # a holder never evicts anyone


def test_ten_thousand_skips_leave_the_book_at_its_bounds_oldest_forgotten_first() -> None:
    clock = Clock()
    book = LeaseBook(ttl=120, clock=clock)
    for i in range(10_000):
        book.skip("skipper", f"s{i:05d}")
    mine = book.skipped("skipper")
    assert len(mine) == SKIPS_PER_SESSION == book.skip_count()
    assert "s09999" in mine and "s00000" not in mine and f"s{10_000 - SKIPS_PER_SESSION:05d}" in mine
    for n in range(30):  # 30 sessions x 1,000 skips: the book keeps 10,000 in all, the newest
        for i in range(SKIPS_PER_SESSION):
            book.skip(f"made-up-{n}", f"x{i:04d}")
    assert book.skip_count() == SKIPS
    assert book.skipped("skipper") == set() and book.skipped("made-up-0") == set()
    assert len(book.skipped("made-up-29")) == SKIPS_PER_SESSION
    book.skip("made-up-29", "x0000")  # a repeat is a refresh, not a second entry
    assert book.skip_count() == SKIPS
