"""Which score rows no longer count: every version of a tweet but its newest, and what the rollup takes back.

A tweet scored by two model versions has a row per version in ``emotion_scores`` (both true records of
what each model said); the trends count it once, as its newest version scored it, because each older row
is copied into ``emotion_superseded``, whose view takes it back out of the rollup (see
``deploy/clickhouse/005_newest_version.sql``). Newest is :func:`emostream.model.registry.version_order`'s
last, the order ``emotion_scores_latest`` spells in SQL.

What is here is the decision, from what the tables hold and what a batch brings; the sink
(:mod:`emostream.stream.clickhouse.sink`) reads the one and writes the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from datetime import datetime
from typing import Any

from emostream.model.registry import version_order
from emostream.schemas import LABELS, EmotionScore

Key = tuple[str, str]  # (tweet_id, model_version): a row of emotion_scores
SUPERSEDED_COLUMNS = (
    "tweet_id",
    "model_version",
    "superseded_by",
    "brand",
    "created_at",
    "label",
    *LABELS,
    "superseded_at",
)
# What the rollup must take back for a superseded row: its own columns, from emotion_scores.
SUPERSEDED_ROW = ("tweet_id", "model_version", "brand", "created_at", "label", *LABELS)


def newest_version(versions: Iterable[str]) -> str:
    """The version whose row counts for a tweet that holds these."""
    return max(versions, key=version_order)


def unwritten(scores: Sequence[EmotionScore], held: Mapping[str, Set[str]]) -> dict[Key, EmotionScore]:
    """The batch's (tweet, version) rows that ``emotion_scores`` does not hold yet (``held``: tweet -> its
    versions there); a tweet twice in one batch with one version is still one row, its first."""
    new: dict[Key, EmotionScore] = {}
    for score in scores:
        if score.model_version not in held.get(score.tweet_id, ()):
            new.setdefault((score.tweet_id, score.model_version), score)
    return new


def superseded(held: Mapping[str, Set[str]], done: Set[Key]) -> dict[Key, str]:
    """Every (tweet, version) of ``held`` that is not its tweet's newest, less those already in
    ``emotion_superseded`` (``done``), each with the version that superseded it."""
    older: dict[Key, str] = {}
    for tweet_id, versions in held.items():
        newest = newest_version(versions)
        older |= {(tweet_id, v): newest for v in versions if v != newest and (tweet_id, v) not in done}
    return older


def superseded_rows(
    older: Mapping[Key, str],
    new: Mapping[Key, EmotionScore],
    stored: Mapping[Key, Mapping[str, Any]],
    now: datetime,
) -> list[dict[str, Any]]:
    """``emotion_superseded`` rows: each older row's columns (:data:`SUPERSEDED_ROW`), from this batch
    (``new``) or as ``emotion_scores`` holds it (``stored``), with its newest version and ``now``."""
    rows = []
    for key, newest in older.items():
        row = new[key].model_dump(include=set(SUPERSEDED_ROW)) if key in new else dict(stored[key])
        rows.append({**row, "superseded_by": newest, "superseded_at": now})
    return rows
