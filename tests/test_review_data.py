"""The review queue's data on the real engine: items written with their batch, one per tweet however
often re-delivered; labels kept as history with the latest counting; the export that `train` reads."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from emostream.schemas import LABELS, NO_EMOTION, ReviewItem, ReviewLabel, Tweet
from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink
from tests.conftest import run_cli
from tests.test_sink import scores

pytestmark = pytest.mark.integration


def review_items(n: int) -> list[ReviewItem]:
    return [
        ReviewItem(
            tweet=Tweet(id=score.tweet_id, text=f"tweet number {i}"), score=score, reason="confidence 0.41 < 0.60"
        )
        for i, score in enumerate(scores(n))
    ]


def test_review_items_are_written_once_per_tweet_and_labels_keep_history(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sink = ClickHouseSink(Settings(home=home).resolved_clickhouse_dsn())
    items = review_items(60)
    try:
        sink.apply_schema()
        sink.write([item.score for item in items], reviews=items)
        sink.write([item.score for item in items[20:]], reviews=items[20:])  # re-delivered after a crash
        assert sink.query("SELECT count(), uniqExact(tweet_id) FROM review_queue FINAL")[1] == [(60, 60)]
        start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
        labels = [
            ReviewLabel(
                tweet_id=item.tweet.id,
                label=LABELS[i % 6],
                reviewer="ana",
                labelled_at=start + timedelta(seconds=i),
                model_version="v0001",
                confidence=0.41,
            )
            for i, item in enumerate(items)
        ]
        later = start + timedelta(hours=1)
        relabelled = labels[0].model_copy(update={"label": "fear", "labelled_at": later})  # ana changes her mind
        no_emotion = labels[1].model_copy(update={"label": NO_EMOTION, "labelled_at": later})
        undone = labels[2].model_copy(update={"retracted": True, "labelled_at": later})
        # a second reviewer's opinion is kept beside the first, never replacing it: bo disagrees on item
        # 3 (disputed: no majority, so no training example until an adjudicator settles it) and agrees on 4
        disagrees = labels[3].model_copy(update={"label": LABELS[4], "reviewer": "bo", "labelled_at": later})
        agrees = labels[4].model_copy(update={"reviewer": "bo", "labelled_at": later})
        sink.write_labels([*labels, relabelled, no_emotion, undone, disagrees, agrees])
        assert sink.query("SELECT count() FROM review_labels")[1] == [(65,)]  # history kept
        decisions = dict(sink.query("SELECT tweet_id, decision FROM review_decisions")[1])
        assert decisions[items[3].tweet.id] == "disputed" and decisions[items[4].tweet.id] == "unanimous"
        assert decisions[items[0].tweet.id] == "single"  # one reviewer's relabel is still one opinion
    finally:
        sink.close()
    exported = run_cli("labels", env={"EMOSTREAM_HOME": str(home)})
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    by_text = {row["text"]: row["label"] for row in rows}
    assert len(rows) == 57  # 60 tweets, one now labelled "none", one label undone, one disputed
    assert by_text["tweet number 0"] == "fear"  # the reviewer's latest label counts
    assert "tweet number 1" not in by_text
    assert "tweet number 2" not in by_text  # its label was withdrawn: pending again, not a training example
    assert "tweet number 3" not in by_text and by_text["tweet number 4"] == LABELS[4]
    out = tmp_path / "labels.csv"
    assert run_cli("labels", "--out", out, env={"EMOSTREAM_HOME": str(home)}).returncode == 0
    from emostream.trainer.data import load_emotion

    data = load_emotion(out)  # what `emostream train --data labels.csv` does with it
    assert sum(len(split) for split in data.values()) == 57


def test_a_label_must_be_one_of_the_six_or_none() -> None:
    with pytest.raises(ValidationError, match="must be one of"):
        ReviewLabel(tweet_id="1", label="boredom", reviewer="ana", model_version="v1", confidence=0.5)
    assert (
        ReviewLabel(tweet_id="1", label=NO_EMOTION, reviewer="ana", model_version="v1", confidence=0.5).label == "none"
    )


def test_sampled_confident_tweets_are_interleaved_not_sorted_last(tmp_path: Path) -> None:
    """80 unsure items by margin, 20 sampled confident ones (margin ~0.9): a window of 10 holds ~2 of
    the sample, and the unsure ones in it still come lowest margin first."""
    from emostream.stream.review.queue import ReviewQueue

    dsn = Settings(home=tmp_path / "home").resolved_clickhouse_dsn()
    items = review_items(100)
    for i, item in enumerate(items):
        sampled = i % 5 == 0
        item.score.margin = 0.9 if sampled else i / 200
        item.reason = "sample: 5% of confident tweets (confidence 0.95)" if sampled else "confidence 0.41 < 0.60"
    sink = ClickHouseSink(dsn)
    sink.apply_schema()
    sink.write([item.score for item in items], reviews=items)
    sink.close()
    queue = ReviewQueue(dsn)
    try:
        first = queue.pending("ana", 10)
        whole = queue.pending("ana", 100)
    finally:
        queue.close()
    sampled = [item for item in first if item.reason.startswith("sample:")]
    assert 1 <= len(sampled) <= 3
    unsure = [item.margin for item in first if not item.reason.startswith("sample:")]
    assert unsure == sorted(unsure) and unsure[0] == pytest.approx(1 / 200)  # the lowest unsure margin
    positions = [n for n, item in enumerate(whole) if item.reason.startswith("sample:")]
    assert len(positions) == 20 and positions[0] < 10 and positions[-1] > 90  # spread over the whole queue


# ------------------------------------------------------------------ labels bind to the text that was shown


def item(tweet_id: str, text: str, at: datetime) -> ReviewItem:
    score = scores(1)[0].model_copy(update={"tweet_id": tweet_id, "scored_at": at})
    return ReviewItem(tweet=Tweet(id=tweet_id, text=text), score=score, reason="confidence 0.41 < 0.60")


def shown(tweet_id: str, text: str, label: str, at: datetime, reviewer: str = "ana") -> Any:
    from emostream.stream.review.queue import ShownLabel, text_sha256

    return ShownLabel(
        tweet_id=tweet_id,
        text_sha256=text_sha256(text),
        label=label,
        reviewer=reviewer,
        labelled_at=at,
        model_version="v0001",
        confidence=0.41,
    )


def snapshot(dsn: str) -> list[tuple[str, str, str]]:
    from emostream.stream.clickhouse.labels import TRAINING_LABELS_WITH_IDS

    sink = ClickHouseSink(dsn)
    try:
        return [row[:3] for row in sink.query(TRAINING_LABELS_WITH_IDS)[1]]  # tweet_id, text, label
    finally:
        sink.close()


def test_a_resent_id_with_other_text_is_a_new_item_and_the_label_stays_with_its_text(tmp_path: Path) -> None:
    """The attack of the issue: anyone who can produce to `tweets` re-sends a labelled id with other text.
    The re-sent text is a second item, pending, and the label trains on the text it was given for, even
    when the original text is sent again afterwards (so it is no longer the oldest row of the id)."""
    from emostream.stream.review.queue import ReviewQueue, text_sha256

    dsn = f"chdb://{tmp_path / 'ch'}"
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    kind, cruel = "what a kind thing to do, thank you", "I will hurt you"
    sink = ClickHouseSink(dsn)
    sink.apply_schema()
    sink.write([], reviews=[item("t1", kind, t0), item("t2", "another tweet", t0)])
    sink.write([], reviews=[item("t1", kind, t0)])  # re-delivered: the same item
    sink.close()
    queue = ReviewQueue(dsn)
    try:
        assert [i.key for i in queue.pending("ana", 10)] == [
            ("t1", text_sha256(kind)),
            ("t2", text_sha256("another tweet")),
        ]
        queue.write_label(shown("t1", kind, "love", t0 + timedelta(minutes=1)))
        assert [i.tweet_id for i in queue.pending("ana", 10)] == ["t2"]
    finally:
        queue.close()
    assert snapshot(dsn) == [("t1", kind, "love")]

    sink = ClickHouseSink(dsn)
    sink.write([], reviews=[item("t1", cruel, t0 + timedelta(minutes=2))])  # the same id, other text
    sink.write([], reviews=[item("t1", kind, t0 + timedelta(minutes=3))])  # and the first text once more
    assert sink.query("SELECT count() FROM review_queue FINAL WHERE tweet_id = 't1'")[1] == [(2,)]
    sink.client.command("OPTIMIZE TABLE review_queue FINAL")  # merges keep both texts too
    assert sink.query("SELECT count() FROM review_queue WHERE tweet_id = 't1'")[1] == [(2,)]
    sink.close()
    assert snapshot(dsn) == [("t1", kind, "love")]  # the label did not move to the new text

    queue = ReviewQueue(dsn)
    try:
        pending = {i.key: i for i in queue.pending("ana", 10)}
        assert set(pending) == {("t1", text_sha256(cruel)), ("t2", text_sha256("another tweet"))}
        assert pending[("t1", text_sha256(cruel))].text == cruel  # pending again, for a person to see
        assert queue.current_label("t1", text_sha256(cruel), "ana") is None
        assert queue.current_label("t1", text_sha256(kind), "ana").label == "love"  # type: ignore[union-attr]
        assert queue.item("t1", text_sha256("a text never sent")) is None and queue.texts("t1") == 2
        queue.write_label(shown("t1", cruel, "anger", t0 + timedelta(minutes=4), reviewer="bo"))
        assert queue.counts("ana").done == 2 and queue.counts("ana").done_by_reviewer == 1
    finally:
        queue.close()
    assert snapshot(dsn) == sorted([("t1", kind, "love"), ("t1", cruel, "anger")], key=lambda r: text_sha256(r[1]))


def test_labels_from_before_the_hash_count_only_while_their_tweet_has_one_text(tmp_path: Path) -> None:
    """Labels written without text_sha256 (before the column, or by `ClickHouseSink.write_labels`) are
    bound to their tweet's only text; a second text of the id leaves both pending, neither trained on."""
    from emostream.stream.review.queue import ReviewQueue

    dsn = f"chdb://{tmp_path / 'ch'}"
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    sink = ClickHouseSink(dsn)
    sink.apply_schema()
    sink.write([], reviews=[item("old1", "first text", t0), item("old2", "kept text", t0)])
    legacy = ReviewLabel(tweet_id="old1", label="joy", reviewer="ana", model_version="v0001", confidence=0.4)
    sink.write_labels([legacy, legacy.model_copy(update={"tweet_id": "old2", "label": "fear"})])
    assert sink.query("SELECT DISTINCT text_sha256 FROM review_labels")[1] == [("",)]
    sink.close()
    assert snapshot(dsn) == [("old1", "first text", "joy"), ("old2", "kept text", "fear")]
    sink = ClickHouseSink(dsn)
    sink.write([], reviews=[item("old1", "second text", t0 + timedelta(minutes=1))])
    sink.close()
    assert snapshot(dsn) == [("old2", "kept text", "fear")]
    queue = ReviewQueue(dsn)
    try:
        assert sorted(i.text for i in queue.pending("ana", 10)) == ["first text", "second text"]
    finally:
        queue.close()


OLD_REVIEW_DDL = """
CREATE TABLE review_queue (tweet_id String, brand LowCardinality(String), created_at DateTime64(3, 'UTC'),
    text String, model_version LowCardinality(String), label LowCardinality(String), confidence Float32,
    margin Float32, sadness Float32, joy Float32, love Float32, anger Float32, fear Float32, surprise Float32,
    reason String, queued_at DateTime64(3, 'UTC'))
ENGINE = ReplacingMergeTree(queued_at) ORDER BY tweet_id;
CREATE TABLE review_labels (tweet_id String, label LowCardinality(String), reviewer LowCardinality(String),
    labelled_at DateTime64(3, 'UTC'), model_version LowCardinality(String), confidence Float32,
    retracted Bool DEFAULT false)
ENGINE = MergeTree ORDER BY (tweet_id, labelled_at)
"""  # deploy/clickhouse/004_review.sql before text_sha256


def test_a_queue_from_before_the_hash_is_migrated_in_place_at_every_start(tmp_path: Path) -> None:
    from emostream.stream.review.queue import ReviewQueue, text_sha256

    dsn = f"chdb://{tmp_path / 'ch'}"
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    sink = ClickHouseSink(dsn)
    for statement in OLD_REVIEW_DDL.split(";"):
        sink.client.command(statement)
    old = [item(f"m{i}", f"old text {i}", t0) for i in range(30)]
    sink.write([], reviews=old[:20])
    sink.write([], reviews=old[10:])  # several parts, one row per id in each (the old key collapsed them)
    sink.write_labels(
        [ReviewLabel(tweet_id="m0", label="sadness", reviewer="ana", model_version="v0001", confidence=0.4)]
    )
    for _ in range(3):  # every worker start applies the DDL: the first migrates, the others change nothing
        sink.apply_schema()
    key = "SELECT sorting_key, primary_key FROM system.tables WHERE database = currentDatabase() AND name = {t:String}"
    assert sink.client.query(key, parameters={"t": "review_queue"}).result_rows == [
        ("tweet_id, text_sha256", "tweet_id")
    ]
    assert sink.query("SELECT count() FROM system.mutations")[1] == [(0,)]  # metadata only, no rewrite
    rows = sink.query("SELECT tweet_id, text, text_sha256 FROM review_queue FINAL ORDER BY tweet_id")[1]
    assert len(rows) == 30 and all(sha == text_sha256(text) for _, text, sha in rows)
    assert sink.query("SELECT label, text_sha256 FROM review_labels")[1] == [("sadness", "")]
    sink.write([], reviews=[item("m1", "new text for an old id", t0 + timedelta(minutes=1))])
    sink.write([], reviews=old[:5])  # re-delivered after the migration: still the same five items
    sink.client.command("OPTIMIZE TABLE review_queue FINAL")
    assert sink.query("SELECT count(), uniqExact(tweet_id) FROM review_queue FINAL")[1] == [(31, 30)]
    sink.close()
    assert snapshot(dsn) == [("m0", "old text 0", "sadness")]
    queue = ReviewQueue(dsn)
    try:
        queue.write_label(shown("m1", "old text 1", "joy", t0 + timedelta(minutes=2)))
        assert len(queue.pending("ana", 50)) == 29
    finally:
        queue.close()
    assert snapshot(dsn) == [("m0", "old text 0", "sadness"), ("m1", "old text 1", "joy")]
