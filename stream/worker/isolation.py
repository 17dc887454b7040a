"""Find the items of a batch that fail on their own: the batch in halves, down to single items.

The scorer (a text the tokenizer or model cannot take) and the writer (a row ClickHouse refuses) both
face a batch that fails as a whole because of a few of its items, and both must go on with the rest.
One failing item among n costs about 2 log2(n) tries; the halves that succeed are done by those tries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def failing_alone(
    indices: Sequence[int],
    attempt: Callable[[list[int]], None],
    about_the_items: Callable[[Exception], bool] = lambda _: True,
) -> dict[int, Exception]:
    """``attempt`` on ``indices``, then on halves of any part that fails, down to single items; returns
    each item that fails alone with its error. A failure ``about_the_items`` says is not theirs (an
    outage) is raised as it is, from whichever part met it."""
    failed: dict[int, Exception] = {}

    def halves(part: list[int]) -> None:
        try:
            attempt(part)
        except Exception as exc:
            if not about_the_items(exc):
                raise
            if len(part) == 1:
                failed[part[0]] = exc
                return
            middle = len(part) // 2
            halves(part[:middle])
            halves(part[middle:])

    halves(list(indices))
    return failed
