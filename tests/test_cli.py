"""The training workflow through the installed console script, on a tiny model and small real data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from emostream.model.runtime import EmotionModel, load_runtime
from emostream.schemas import LABELS
from emostream.settings import load_settings
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_train_writes_a_complete_promoted_version(trained_registry: Path) -> None:
    version = trained_registry / "v0001"
    assert (trained_registry / "current").read_text().strip() == "v0001"
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.json",
        "training.json",
        "README.md",
        "confusion_matrix.png",
    ):
        assert (version / name).is_file(), name
    config = json.loads((version / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(6)] == list(LABELS)
    metrics = json.loads((version / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert set(metrics[split]) >= {"accuracy", "f1_weighted", "f1_macro", "per_class", "confusion_matrix"}
        assert set(metrics[split]["per_class"]) == set(LABELS)
        assert sum(map(sum, metrics[split]["confusion_matrix"])) == 120
    training = json.loads((version / "training.json").read_text())
    assert training["data"]["rows"] == {"train": 400, "validation": 120, "test": 120}
    assert all(len(digest) == 64 for digest in training["data"]["files"].values())
    assert training["config"]["epochs"] == 2.0


def test_train_prints_the_version_directory_last_and_promotes_only_better(
    tiny_model: Path, small_data: Path, tmp_path: Path
) -> None:
    args = (
        "train",
        "--base-model",
        tiny_model,
        "--data",
        small_data,
        "--registry",
        tmp_path,
        "--epochs",
        "1",
        "--batch-size",
        "32",
    )
    # three epochs at a real learning rate: clearly better than a head left at its random start below
    first = run_cli(*args, "--learning-rate", "2e-3", "--epochs", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.strip().splitlines()[-1] == str((tmp_path / "v0001").resolve())
    # trained on labels that are all "surprise" (a rare class), it learns to answer "surprise": worse on the
    # real validation split by construction (a random head, the earlier choice, was sometimes as good by chance)
    wrong = tmp_path.parent / f"{tmp_path.name}-all-surprise"
    wrong.mkdir()
    for name in ("train.txt", "val.txt", "test.txt"):
        lines = (small_data / name).read_text().splitlines()
        if name == "train.txt":
            lines = [line.rpartition(";")[0] + ";surprise" for line in lines]
        (wrong / name).write_text("\n".join(lines) + "\n")
    worse = [*args[:4], wrong, *args[5:]]  # the same command with --data pointing at the wrong labels
    second = run_cli(*worse, "--learning-rate", "2e-3")
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1].endswith("v0002")
    assert (tmp_path / "current").read_text().strip() == "v0001"
    forced = run_cli(*worse, "--learning-rate", "2e-3", "--promote")
    assert forced.returncode == 0
    assert (tmp_path / "current").read_text().strip() == "v0003"
    listing = run_cli("models", "--registry", tmp_path)
    assert listing.returncode == 0
    assert "* v0003" in listing.stdout and "v0001" in listing.stdout


def test_predict_gives_six_probabilities_matching_the_served_runtime(trained_registry: Path) -> None:
    texts = ["i love this so much", "this makes me furious", "what a shock"]
    result = run_cli("predict", "--registry", trained_registry, *texts)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == texts
    expected = load_runtime(load_settings(), trained_registry / "v0001").predict_proba(texts)
    for record, row in zip(records, expected, strict=True):
        probabilities = np.array([record[name] for name in LABELS])
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(probabilities, row, atol=1e-5)
        assert record["label"] == LABELS[int(row.argmax())]
        assert record["model_version"] == "v0001"


def test_predict_reads_stdin_and_draws_the_plot(trained_registry: Path, tmp_path: Path) -> None:
    plot = tmp_path / "p.png"
    result = run_cli("predict", "--registry", trained_registry, "--plot", plot, stdin="first tweet\n\nsecond one\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_batching_does_not_change_scores(trained_registry: Path, small_data: Path) -> None:
    texts = [line.rpartition(";")[0] for line in (small_data / "test.txt").read_text().splitlines()[:50]]
    one_by_one = EmotionModel(trained_registry / "v0001", batch_size=1).predict_proba(texts)
    batched = EmotionModel(trained_registry / "v0001", batch_size=16).predict_proba(texts)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_evaluate_matches_the_metrics_saved_at_training(trained_registry: Path, small_data: Path) -> None:
    result = run_cli("evaluate", "--registry", trained_registry, "--data", small_data, "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    saved = json.loads((trained_registry / "v0001" / "metrics.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])
    assert metrics["confusion_matrix"] == saved["confusion_matrix"]
    table = run_cli(
        "evaluate", "--model", trained_registry / "v0001", "--data", small_data, "--split", small_data / "val.txt"
    )
    assert table.returncode == 0, table.stderr
    assert "weighted F1" in table.stdout and "Confusion matrix" in table.stdout


def test_errors_writes_validation_rows_sorted_by_loss(trained_registry: Path, small_data: Path, tmp_path: Path) -> None:
    result = run_cli(
        "errors", "--registry", trained_registry, "--data", small_data, "--reports", tmp_path, "--top", "3"
    )
    assert result.returncode == 0, result.stderr
    with (tmp_path / "errors_v0001_validation.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 120
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    assert rows[0]["text"][:20] in result.stdout
    assert set(rows[0]) == {"text", "label", "predicted_label", "loss"}


def test_bad_data_file_exits_2_naming_file_line_and_label(small_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("val.txt", "test.txt"):
        (bad / name).write_text((small_data / name).read_text())
    (bad / "train.txt").write_text("i feel fine;joy\ni am so bored;boredom\n")
    result = run_cli("train", "--data", bad, "--registry", tmp_path / "models")
    assert result.returncode == 2
    assert f"{bad / 'train.txt'}:2: unknown label 'boredom'" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_model_yet_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("predict", "--registry", tmp_path, "hello")
    assert result.returncode == 2
    assert "no current model" in result.stderr


def test_eda_prints_the_table_and_writes_plots(small_data: Path, tmp_path: Path) -> None:
    result = run_cli("eda", "--data", small_data, "--reports", tmp_path)
    assert result.returncode == 0, result.stderr
    for label in LABELS:
        assert label in result.stdout
    assert (tmp_path / "eda_class_distribution.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "eda_words_per_tweet.png").read_bytes()[:4] == b"\x89PNG"


def test_baseline_beats_the_dummy_classifier(small_data: Path, minilm_path: Path, tmp_path: Path) -> None:
    result = run_cli("baseline", "--data", small_data, "--encoder", minilm_path, "--reports", tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "baseline_metrics.json").read_text())
    assert metrics["LogisticRegression"]["accuracy"] > metrics["DummyClassifier"]["accuracy"] + 0.1
    assert (tmp_path / "baseline_confusion_matrix.png").is_file()


def test_a_worker_facing_a_foreign_table_says_so_in_one_line(trained_registry: Path, tmp_path: Path) -> None:
    from emostream.stream.clickhouse.sink import ClickHouseSink

    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    sink.client.command("CREATE TABLE emotion_scores (x Int8) ENGINE = MergeTree ORDER BY x")  # not emostream's
    sink.close()
    result = run_cli(
        "worker",
        "--registry",
        trained_registry,
        "--clickhouse-dsn",
        f"chdb://{tmp_path / 'ch'}",
        "--kafka-bootstrap",
        "127.0.0.1:9",
        "--home",
        tmp_path / "home",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ClickHouse refused emostream's DDL (CREATE MATERIALIZED VIEW IF NOT EXISTS emotion_trends_minute_mv)" in (
        result.stderr.replace("\n", " ")
    )
    assert "Traceback" not in result.stderr
