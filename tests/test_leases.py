"""Leases keep reviewers off each other's items; unit tests on a fake clock."""

from __future__ import annotations

from stream.review.leases import SKIP_MEMORY, LeaseBook


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


def test_a_skipped_item_goes_to_the_others_at_once_and_stays_away_from_the_skipper() -> None:
    clock = Clock()
    book = LeaseBook(ttl=120, clock=clock)
    book.take("ana", ["t1"])
    book.skip("ana", "t1")
    assert book.holder("t1") is None
    assert book.skipped("ana") == {"t1"} and book.skipped("bo") == set()
    clock.now = SKIP_MEMORY + 1
    assert book.skipped("ana") == set()
