"""Rendering results for people: rich tables on stdout, notes and progress on stderr."""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from emostream.schemas.text import escape_control

if TYPE_CHECKING:
    import pandas as pd


class TextConsole(Console):
    """A rich console that prints strings as text: never read as markup, control characters escaped.

    Messages carry strings from outside (a brand, a tweet, a ClickHouse error quoting either), so a plain
    ``str`` given to :meth:`print` is shown as :func:`literal` shows it; styling is asked for with
    ``style=`` or a :class:`~rich.text.Text` built by the caller, never with markup in a string.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print as rich does, but every ``str`` as :func:`literal` text and without highlighting."""
        kwargs.setdefault("highlight", False)
        super().print(*(literal(o) if isinstance(o, str) else o for o in objects), **kwargs)


# Piped output (a log, a test, `| less`) gets a wide table instead of rich's 80-column default.
out = TextConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 160, markup=False)
err = TextConsole(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160, markup=False)


def literal(value: object, style: str = "", newlines: bool = True) -> Text:
    """A string from outside (the database, an error message, a file) as rich text that prints literally.

    rich would read ``[link=...]`` or ``[/x]`` in a plain ``str`` as markup (a hyperlink, a crash), and a
    terminal would act on escape sequences: a :class:`~rich.text.Text` is never parsed as markup, and the
    control characters are escaped first.
    """
    return Text(escape_control("" if value is None else str(value), newlines), style=style)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False) -> Table:
    """A table of results; ``raw`` prints values as they are (query output), else numbers are formatted."""
    result = Table(title=literal(title) if title else None, title_justify="left")
    for i, name in enumerate(columns):
        result.add_column(literal(name, newlines=False), justify="left" if i == 0 else "right")
    for row in rows:  # cells are Text: rich would read markup in a str cell
        result.add_row(*(literal(v if raw else _cell(v), newlines=False) for v in row))
    return result


def frame_table(title: str, frame: pd.DataFrame, index: bool = True) -> Table:
    """A DataFrame as a :func:`table`, its index as the first column unless ``index`` is False."""
    columns = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    rows = (
        [idx, *values] if index else list(values)
        for idx, values in zip(frame.index, frame.itertuples(index=False), strict=True)
    )
    return table(title, columns, rows)


def metrics_table(title: str, named_metrics: dict[str, dict[str, Any]]) -> Table:
    """Headline metrics of one or more models/splits side by side."""
    return table(
        title,
        ["", "accuracy", "weighted F1", "macro F1", "n"],
        ([name, m["accuracy"], m["f1_weighted"], m["f1_macro"], m["n"]] for name, m in named_metrics.items()),
    )


def per_class_table(title: str, metrics: dict[str, Any]) -> Table:
    """Precision, recall, F1 and support per label, from one split's :func:`classification_metrics` result."""
    return table(
        title,
        ["label", "precision", "recall", "F1", "support"],
        ([name, c["precision"], c["recall"], c["f1"], c["support"]] for name, c in metrics["per_class"].items()),
    )


def _cell(value: Any) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return f"{value:.4f}" if abs(float(value)) < 10 else f"{value:,.1f}"
    return "" if value is None else str(value)
