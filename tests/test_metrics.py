from pathlib import Path

import pytest

from emostream.trainer.classification_metrics import classification_metrics, plot_confusion_matrix


def test_metrics_against_hand_computed_values() -> None:
    gold = [0, 0, 1, 1, 1, 5]
    predicted = [0, 1, 1, 1, 1, 0]
    m = classification_metrics(gold, predicted)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # sadness: P=1/2 R=1/2 F1=1/2; joy: P=3/4 R=1 F1=6/7; surprise: F1=0; weights 2, 3, 1 of 6
    assert m["f1_weighted"] == pytest.approx((2 * 0.5 + 3 * 6 / 7 + 0) / 6)
    assert m["per_class"]["joy"] == pytest.approx({"precision": 0.75, "recall": 1.0, "f1": 6 / 7, "support": 3})
    assert m["confusion_matrix"][0] == [1, 1, 0, 0, 0, 0]
    assert m["confusion_matrix"][5] == [1, 0, 0, 0, 0, 0]
    assert len(m["confusion_matrix"]) == 6 and m["n"] == 6


def test_confusion_matrix_plot_is_a_png(tmp_path: Path) -> None:
    path = plot_confusion_matrix([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 4], tmp_path / "cm.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
