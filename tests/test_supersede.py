"""Which score rows a newer model version supersedes (stream/clickhouse/supersede.py), without ClickHouse.
tests/test_sink.py and tests/test_trends.py check the same on the engine, through the sink."""

from __future__ import annotations

from datetime import UTC, datetime

from emostream.schemas import LABELS, EmotionScore
from emostream.stream.clickhouse.supersede import (
    SUPERSEDED_COLUMNS,
    SUPERSEDED_ROW,
    newest_version,
    superseded,
    superseded_rows,
    unwritten,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def score(tweet_id: str, version: str, label: str = "joy") -> EmotionScore:
    return EmotionScore(
        tweet_id=tweet_id,
        brand="acme",
        created_at=NOW,
        scored_at=NOW,
        model_version=version,
        label=label,
        confidence=0.9,
        margin=0.8,
        **dict.fromkeys(LABELS, 0.02) | {label: 0.9},
    )


def test_the_newest_version_is_the_registrys_highest_number() -> None:
    assert newest_version({"v0009", "v0010", "dev-model"}) == "v0010"
    assert newest_version({"dev-model", "v0001"}) == "v0001"  # any registry name above any other name


def test_a_batch_writes_only_the_pairs_not_held_and_each_once() -> None:
    first, repeat = score("t1", "v0002", "joy"), score("t1", "v0002", "fear")
    batch = [score("t0", "v0001"), first, repeat, score("t2", "v0001")]
    new = unwritten(batch, {"t0": {"v0001"}, "t1": {"v0001"}})
    assert list(new) == [("t1", "v0002"), ("t2", "v0001")]
    assert new[("t1", "v0002")] is first  # a tweet twice in a batch is its first score


def test_every_version_but_the_newest_is_superseded_once() -> None:
    held = {"t1": {"v0001", "v0002", "v0003"}, "t2": {"v0001"}, "t3": {"v0004", "v0002"}}
    assert superseded(held, done={("t1", "v0001")}) == {("t1", "v0002"): "v0003", ("t3", "v0002"): "v0004"}
    assert superseded({"t1": {"v0001", "v0002"}}, done={("t1", "v0001")}) == {}  # a re-delivery adds nothing


def test_superseded_rows_copy_the_older_row_from_the_batch_or_the_table() -> None:
    in_batch = score("t1", "v0001", "anger")
    stored = {("t2", "v0001"): {**score("t2", "v0001", "love").model_dump(include=set(SUPERSEDED_ROW))}}
    rows = superseded_rows(
        {("t1", "v0001"): "v0002", ("t2", "v0001"): "v0003"}, {("t1", "v0001"): in_batch}, stored, NOW
    )
    assert [(row["tweet_id"], row["label"], row["superseded_by"]) for row in rows] == [
        ("t1", "anger", "v0002"),
        ("t2", "love", "v0003"),
    ]
    assert all(set(row) == set(SUPERSEDED_COLUMNS) and row["superseded_at"] == NOW for row in rows)
