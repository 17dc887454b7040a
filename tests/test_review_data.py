"""The review queue's data on the real engine: items written with their batch, one per tweet however
often re-delivered; labels kept as history with the latest counting; the export that `train` reads."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import LABELS, NO_EMOTION, ReviewItem, ReviewLabel, Tweet
from schemas.settings import Settings
from stream.sink import ClickHouseSink
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
        relabelled = labels[0].model_copy(
            update={"label": "fear", "reviewer": "bo", "labelled_at": start + timedelta(hours=1)}
        )
        no_emotion = labels[1].model_copy(update={"label": NO_EMOTION, "labelled_at": start + timedelta(hours=1)})
        undone = labels[2].model_copy(update={"retracted": True, "labelled_at": start + timedelta(hours=1)})
        sink.write_labels([*labels, relabelled, no_emotion, undone])
        assert sink.query("SELECT count() FROM review_labels")[1] == [(63,)]  # history kept
    finally:
        sink.close()
    exported = run_cli("labels", env={"EMOSTREAM_HOME": str(home)})
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    by_text = {row["text"]: row["label"] for row in rows}
    assert len(rows) == 58  # 60 tweets, one now labelled "none", one label undone
    assert by_text["tweet number 0"] == "fear"  # the latest label counts
    assert "tweet number 1" not in by_text
    assert "tweet number 2" not in by_text  # its label was withdrawn: pending again, not a training example
    out = tmp_path / "labels.csv"
    assert run_cli("labels", "--out", out, env={"EMOSTREAM_HOME": str(home)}).returncode == 0
    from trainer.data import load_emotion

    data = load_emotion(out)  # what `emostream train --data labels.csv` does with it
    assert sum(len(split) for split in data.values()) == 58


def test_a_label_must_be_one_of_the_six_or_none() -> None:
    with pytest.raises(ValidationError, match="must be one of"):
        ReviewLabel(tweet_id="1", label="boredom", reviewer="ana", model_version="v1", confidence=0.5)
    assert (
        ReviewLabel(tweet_id="1", label=NO_EMOTION, reviewer="ana", model_version="v1", confidence=0.5).label == "none"
    )


def test_sampled_confident_tweets_are_interleaved_not_sorted_last(tmp_path: Path) -> None:
    """80 unsure items by margin, 20 sampled confident ones (margin ~0.9): a window of 10 holds ~2 of
    the sample, and the unsure ones in it still come lowest margin first."""
    from stream.review.queue import ReviewQueue

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
        first = queue.pending(10)
        whole = queue.pending(100)
    finally:
        queue.close()
    sampled = [item for item in first if item.reason.startswith("sample:")]
    assert 1 <= len(sampled) <= 3
    unsure = [item.margin for item in first if not item.reason.startswith("sample:")]
    assert unsure == sorted(unsure) and unsure[0] == pytest.approx(1 / 200)  # the lowest unsure margin
    positions = [n for n, item in enumerate(whole) if item.reason.startswith("sample:")]
    assert len(positions) == 20 and positions[0] < 10 and positions[-1] > 90  # spread over the whole queue
