"""Rendering results for people: rich tables on stdout, notes and progress on stderr."""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

# Piped output (a log, a test, `| less`) gets a wide table instead of rich's 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False) -> Table:
    """A table of results; ``raw`` prints values as they are (query output), else numbers are formatted."""
    result = Table(title=title or None, title_justify="left")
    for i, name in enumerate(columns):
        result.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        result.add_row(*(("" if v is None else str(v)) if raw else _cell(v) for v in row))
    return result


def frame_table(title: str, frame: pd.DataFrame, index: bool = True) -> Table:
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
    return table(
        title,
        ["label", "precision", "recall", "F1", "support"],
        ([name, c["precision"], c["recall"], c["f1"], c["support"]] for name, c in metrics["per_class"].items()),
    )


def _cell(value: Any) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return "" if value is None else str(value)
