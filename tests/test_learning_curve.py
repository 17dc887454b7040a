"""The review loop's learning curve (benchmarks/review_loop.py, step 7) on a tiny model: each point is a
challenger trained the way a round trains, scored on the dev tweets; the table and the PNG come out."""

from __future__ import annotations

import sys
from pathlib import Path

from emostream.model.registry import ModelRegistry
from emostream.trainer.config import RetrainPolicy
from emostream.trainer.data import load_emotion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import review_loop  # noqa: E402

SERIES = ("queue, 8 epochs, reviewed x2", "queue, 1 epochs, reviewed x1", "random tweets, 8 epochs, reviewed x2")


def tweets(small_data: Path, n: int, prefix: str) -> list[tuple[str, str]]:
    lines = (small_data / "train.txt").read_text().splitlines()
    return [(f"{prefix}-{i}", line.rsplit(";", 1)[0]) for i, line in enumerate(lines[:n])]


def test_the_learning_curve_trains_each_point_as_a_round_and_scores_it_on_dev(
    trained_registry: Path, small_data: Path, tmp_path: Path
) -> None:
    champion = ModelRegistry(trained_registry).require_current().path
    # every reviewer says fear, and so does every dev tweet: a point trained on the labels learns it,
    # so its dev accuracy says the labels (not the champion alone) made the point
    stream = tweets(small_data, 120, "train")
    answers = {tweet_id: "fear" for tweet_id, _ in stream}
    texts = dict(stream)
    reviewed = [(tweet_id, text, "fear") for tweet_id, text in stream[:60]]
    dev = [{"id": str(i), "text": text, "label": "fear"} for i, (_, text) in enumerate(tweets(small_data, 30, "d"))]
    policy = RetrainPolicy(
        retrain_epochs=8, retrain_learning_rate=3e-3, retrain_replay=0, retrain_review_weight=2, batch_size=16
    )
    alternative = policy.model_copy(update={"retrain_epochs": 1.0, "retrain_review_weight": 1})
    points = review_loop.learning_curve(
        champion,
        reviewed,
        answers,
        texts,
        dev,
        tmp_path / "curve",
        base=load_emotion(small_data),
        policy=policy,
        alt_policy=alternative,
        counts=[30, 60],
    )
    assert [(p["series"], p["labels"]) for p in points] == [(series, k) for k in (30, 60) for series in SERIES]
    for point in points:
        assert 0 < int(point["trained_on"]) < int(point["labels"])  # a round's hold-out is not trained on
    best = {(p["series"], p["labels"]): float(p["dev_accuracy"]) for p in points}
    assert best[(SERIES[0], 60)] == 1.0 and best[(SERIES[2], 60)] == 1.0
    assert not list((tmp_path / "curve").glob("point-*"))  # each point's weights are removed once scored
    png = tmp_path / "curve.png"
    review_loop.plot_curve(points, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = review_loop.curve_table(points)
    assert [column.header for column in table.columns][1:] == list(SERIES)
    assert table.row_count == 2
