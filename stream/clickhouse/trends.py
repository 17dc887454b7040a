"""Emotion trends from the rollup (``emotion_trends_minute``): label shares per time bucket, and spikes.

A tweet scored by two model versions counts once, as its newest version scored it (the sink takes the
older row back out of the rollup; ``deploy/clickhouse/005_newest_version.sql``).

The SQL runs through whatever answers read-only SQL (the running worker's endpoint, or a client of our
own), so this module only builds statements and reads results; pandas does the arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from emostream.schemas import LABELS
from emostream.stream.clickhouse.sql import SqlResult

if TYPE_CHECKING:
    import pandas as pd

Bucket = Literal["minute", "hour", "day"]
BUCKET_FUNCTIONS = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TrendsError(ValueError):
    """A bad argument (duration, bucket), named with what was expected."""


def parse_duration(text: str) -> int:
    """``90m``, ``24h``, ``7d`` -> seconds."""
    match = DURATION.match(text)
    if not match:
        raise TrendsError(f"--since must be a number and a unit (s, m, h, d, w), like 24h or 90m; not {text!r}")
    return int(float(match.group(1)) * SECONDS[match.group(2)])


def sql_string(value: str) -> str:
    """A ClickHouse string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def shares_statement(by: Bucket, since_seconds: int, brand: str | None = None) -> str:
    """Tweets per bucket and label from the rollup, each tweet once (its newest model version's label).

    The rollup holds rows with ``tweets = -1`` that take back a version a newer one replaced, so only
    ``sum(tweets)`` means anything, and a label whose tweets all moved to another label sums to 0:
    ``HAVING`` leaves it out (its share is 0 either way).
    """
    if by not in BUCKET_FUNCTIONS:
        raise TrendsError(f"--by must be minute, hour or day, not {by!r}")
    brand_filter = f" AND brand = {sql_string(brand)}" if brand else ""
    return (
        f"SELECT {BUCKET_FUNCTIONS[by]}(minute) AS bucket, label, sum(tweets) AS tweets "
        f"FROM emotion_trends_minute WHERE minute >= now() - INTERVAL {since_seconds} SECOND{brand_filter} "
        "GROUP BY bucket, label HAVING tweets > 0 ORDER BY bucket, label"
    )


@dataclass
class Trends:
    """Label shares per time bucket, and each bucket's tweet count, as read from the rollup."""

    shares: pd.DataFrame  # index: bucket; columns: the six labels (share of the bucket's tweets, 0-1)
    tweets: pd.Series  # tweets per bucket
    by: Bucket = "hour"

    @classmethod
    def load(cls, run: Callable[[str], SqlResult], by: Bucket, since_seconds: int, brand: str | None = None) -> Trends:
        """The last ``since_seconds`` in ``by`` buckets (one ``brand``'s or all), read with ``run``; empty if none."""
        import pandas as pd

        result = run(shares_statement(by, since_seconds, brand))
        frame = pd.DataFrame(result.rows, columns=result.columns)
        if frame.empty:
            empty = pd.DataFrame(columns=list(LABELS), dtype=float)
            return cls(empty, pd.Series(dtype="int64"), by)
        frame["bucket"] = pd.to_datetime(frame["bucket"])
        frame["tweets"] = frame["tweets"].astype("int64")
        counts = frame.pivot_table(index="bucket", columns="label", values="tweets", aggfunc="sum", fill_value=0)
        counts = counts.reindex(columns=list(LABELS), fill_value=0)
        totals = counts.sum(axis=1)
        return cls(counts.div(totals, axis=0), totals, by)

    def spikes(self, k: float = 3.0, window: int = 12, min_periods: int | None = None) -> pd.DataFrame:
        """Buckets where a label's share exceeds its trailing mean by more than ``k`` standard deviations.

        The trailing statistics use the ``window`` buckets *before* each one (the bucket itself is not
        part of its own baseline), and need ``min_periods`` of them (default: a full window; with three
        buckets of history every wobble looks like a spike).
        """
        min_periods = window if min_periods is None else min_periods
        import pandas as pd

        rows = []
        for label in LABELS:
            series = self.shares[label].astype(float)
            baseline = series.shift(1).rolling(window, min_periods=min_periods)
            mean, std = baseline.mean(), baseline.std()
            jump = series > mean + k * std.clip(lower=1e-9)
            for bucket in series.index[jump.fillna(False)]:
                rows.append(
                    {
                        "bucket": bucket,
                        "label": label,
                        "share": series[bucket],
                        "trailing_mean": mean[bucket],
                        "z": (series[bucket] - mean[bucket]) / max(std[bucket], 1e-9),
                        "tweets": int(self.tweets[bucket]),
                    }
                )
        found = pd.DataFrame(rows, columns=["bucket", "label", "share", "trailing_mean", "z", "tweets"])
        return found.sort_values(["bucket", "label"], ignore_index=True)

    def plot(self, path: Path | BinaryIO, title: str) -> Path | BinaryIO:
        """A line chart of the shares, to a PNG file or a binary stream (the trends page serves it)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
        import pandas as pd

        fig, ax = plt.subplots(figsize=(10, 4.5))
        for label in LABELS:
            ax.plot(self.shares.index, 100 * self.shares[label].astype(float), marker="o", markersize=3, label=label)
        ax.set_ylabel("share of tweets (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.legend(ncol=6, loc="upper center", fontsize=8)
        ax.grid(alpha=0.3)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if len(self.shares.index) == 1:  # one bucket: show that bucket, not years around it
            width = pd.Timedelta(1, unit={"minute": "min", "hour": "h", "day": "D"}[self.by])
            ax.set_xlim(self.shares.index[0] - width, self.shares.index[0] + width)
        fig.tight_layout()
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, format="png")
        plt.close(fig)
        return path
