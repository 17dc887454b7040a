"""Training on several data sources at once: the splits they make, the settings that name them, the reports.

Two sources' train and validation splits are concatenated (the model learns from both, its best epoch is
chosen on both), each source's test split is reported under its name, and the first source's is ``test``.
One source behaves exactly as before.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from datasets import DatasetDict
from pydantic import ValidationError

from emostream.schemas import LABELS
from emostream.settings import default_data_source, load_settings
from emostream.trainer.data import DataError, load_emotion, load_sources
from tests.conftest import run_cli

GOEMOTIONS_HEADER = "id\ttext\tlabel\tgoemotions_labels\n"


def carer_dir(directory: Path, train: str, val: str = "i am happy;joy\n", test: str = "so sad;sadness\n") -> Path:
    """A source in CARER's layout: ``train``/``val``/``test.txt``, ``text;label`` per line."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.txt", train), ("val.txt", val), ("test.txt", test)):
        (directory / name).write_text(text)
    return directory


def goemotions_dir(directory: Path, rows: dict[str, list[tuple[str, str]]]) -> Path:
    """A source in GoEmotions' layout: ``train``/``dev``/``test.tsv`` with its four-column header."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        lines = [f"c{i}\t{text}\t{label}\t{label}\n" for i, (text, label) in enumerate(rows[split])]
        (directory / f"{stem}.tsv").write_text(GOEMOTIONS_HEADER + "".join(lines))
    return directory


def two_sources(tmp_path: Path) -> tuple[Path, Path]:
    first = carer_dir(
        tmp_path / "carer",
        "i feel fine;joy\ni feel lost;sadness\n",
        val="i am happy;joy\n",
        test="so sad;sadness\ni am scared;fear\n",
    )
    second = goemotions_dir(
        tmp_path / "goemo",
        {
            "train": [("WOW that's amazing!!", "surprise"), ("ugh, I hate Mondays", "anger"), ("love u", "love")],
            "validation": [("so grateful", "joy"), ("this scares me", "fear")],
            "test": [("Why would you do that?", "surprise")],
        },
    )
    return first, second


def test_two_sources_train_on_the_union_and_keep_each_test_apart(tmp_path: Path) -> None:
    first, second = two_sources(tmp_path)
    loaded = load_sources([first, second])
    data = loaded.dataset
    assert list(data) == ["train", "validation", "test"]
    assert data["train"]["text"] == [
        "i feel fine",
        "i feel lost",
        "WOW that's amazing!!",
        "ugh, I hate Mondays",
        "love u",
    ]
    assert [LABELS[i] for i in data["train"]["label"]] == ["joy", "sadness", "surprise", "anger", "love"]
    assert data["validation"]["text"] == ["i am happy", "so grateful", "this scares me"]
    assert data["test"]["text"] == ["so sad", "i am scared"]  # the primary's
    assert [s.name for s in loaded.sources] == ["carer", "goemo"] and loaded.primary.name == "carer"
    assert {name: test["text"] for name, test in loaded.tests.items()} == {
        "carer": ["so sad", "i am scared"],
        "goemo": ["Why would you do that?"],
    }
    assert loaded.sources[1].rows == {"train": 3, "validation": 2, "test": 1}
    assert [f.name for f in loaded.files] == ["train.txt", "val.txt", "test.txt", "train.tsv", "dev.tsv", "test.tsv"]
    assert data["train"].features == load_emotion(first)["train"].features


def test_one_source_is_exactly_load_emotion(tmp_path: Path) -> None:
    directory, _ = two_sources(tmp_path)
    single = tmp_path / "all.csv"
    single.write_text("text,label\n" + "".join(f"tweet number {i},{LABELS[i % 6]}\n" for i in range(60)))
    for source in (directory, single, str(single)):
        expected = load_emotion(source, seed=7)
        loaded = load_sources([source], seed=7)
        assert load_sources(source, seed=7).dataset.keys() == expected.keys()
        for split in ("train", "validation", "test"):
            assert loaded.dataset[split]["text"] == expected[split]["text"]
            assert loaded.dataset[split]["label"] == expected[split]["label"]
        assert loaded.dataset is loaded.primary.splits  # nothing concatenated, nothing copied
        assert list(loaded.tests) == [Path(source).stem]


def test_a_bad_file_in_the_second_source_names_that_file_and_line(tmp_path: Path) -> None:
    first, second = two_sources(tmp_path)
    (second / "dev.tsv").write_text(GOEMOTIONS_HEADER + "c1\tfine\tjoy\tjoy\nc2\tmeh\tboredom\tboredom\n")
    with pytest.raises(DataError) as info:
        load_sources([first, second])
    assert str(info.value).startswith(f"{second / 'dev.tsv'}:3: unknown label 'boredom'")


def test_a_source_given_twice_is_refused_and_shared_names_are_told_apart(tmp_path: Path) -> None:
    first, _ = two_sources(tmp_path)
    with pytest.raises(DataError, match="given twice"):
        load_sources([first, first / ".." / "carer"])
    with pytest.raises(DataError, match="at least one"):
        load_sources([])
    other = carer_dir(tmp_path / "elsewhere" / "carer", "i feel ok;joy\n")
    assert list(load_sources([first, other]).tests) == ["carer", "carer-2"]


def test_emostream_data_takes_several_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EMOSTREAM_DATA", raising=False)
    assert load_settings().data == [default_data_source()]  # the default: CARER, as before
    monkeypatch.setenv("EMOSTREAM_DATA", "../shared/data/emotion")
    assert load_settings().data == ["../shared/data/emotion"]
    monkeypatch.setenv("EMOSTREAM_DATA", os.pathsep.join(["../shared/data/emotion", "../shared/data/goemotions", ""]))
    assert load_settings().data == ["../shared/data/emotion", "../shared/data/goemotions"]
    monkeypatch.setenv("EMOSTREAM_DATA", '["a dir", "dair-ai/emotion"]')
    assert load_settings().data == ["a dir", "dair-ai/emotion"]
    assert load_settings(data=["x", "y"]).data == ["x", "y"]  # a flag outranks the environment
    assert load_settings(data=tmp_path).data == [str(tmp_path)]
    monkeypatch.setenv("EMOSTREAM_DATA", os.pathsep)
    with pytest.raises(ValidationError, match="data"):
        load_settings()
    monkeypatch.setenv("EMOSTREAM_DATA", "[not json")
    with pytest.raises(ValidationError, match="data"):
        load_settings()


def test_retrain_job_reads_one_source_or_several() -> None:
    from emostream.retraining import RetrainJob
    from emostream.trainer.config import RetrainPolicy
    from emostream.trainer.data import ColumnMap

    def job(data: str | tuple[str, ...]) -> RetrainJob:
        return RetrainJob(Path("models"), "chdb:///nowhere", data, ColumnMap(), RetrainPolicy())

    assert job("../shared/data/emotion").sources == ["../shared/data/emotion"]
    assert job(("a", "b")).sources == ["a", "b"]


@pytest.mark.integration
def test_repeated_data_flags_reach_eda_and_a_bad_second_source_exits_2(tmp_path: Path) -> None:
    first, second = two_sources(tmp_path)
    result = run_cli("eda", "--data", first, "--data", second, "--reports", tmp_path / "reports")
    assert result.returncode == 0, result.stderr
    assert f"loading data from {first}, {second}" in result.stderr
    (second / "train.tsv").write_text(GOEMOTIONS_HEADER + "c1\t\tjoy\tjoy\n")
    result = run_cli("train", "--data", first, "--data", second, "--registry", tmp_path / "models")
    assert result.returncode == 2
    assert f"{second / 'train.tsv'}:2: empty text" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_one_source_training_reports_as_before(trained_registry: Path, small_data: Path) -> None:
    version = trained_registry / "v0001"
    metrics = json.loads((version / "metrics.json").read_text())
    assert metrics["tests"] == {small_data.name: metrics["test"]}
    training = json.loads((version / "training.json").read_text())["data"]
    assert training["rows"] == {"train": 400, "validation": 120, "test": 120}
    assert training["source"] == str(small_data)
    assert [s["name"] for s in training["sources"]] == [small_data.name]
    card = (version / "README.md").read_text()
    assert "| test |" in card and "(primary)" not in card


@pytest.mark.integration
def test_training_on_two_sources_reports_each_test_split(
    tiny_model: Path, small_data: Path, shared_data: Path, tmp_path: Path
) -> None:
    # the second source: other CARER rows, written as GoEmotions' TSV files (a header, four columns)
    lines = (shared_data / "train.txt").read_text().splitlines()[1000:1240]
    rows = [tuple(line.rsplit(";", 1)) for line in lines]
    second = goemotions_dir(tmp_path / "second", {"train": rows[:160], "validation": rows[160:200], "test": rows[200:]})
    registry = tmp_path / "models"
    result = run_cli(
        "train",
        "--base-model",
        tiny_model,
        "--data",
        small_data,
        "--data",
        second,
        "--registry",
        registry,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--learning-rate",
        "1e-3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    version = Path(result.stdout.strip().splitlines()[-1])
    metrics = json.loads((version / "metrics.json").read_text())
    assert list(metrics["tests"]) == [small_data.name, "second"]
    assert metrics["tests"][small_data.name] == metrics["test"]  # the primary's test is `test`
    assert metrics["test"]["n"] == 120 and metrics["tests"]["second"]["n"] == 40
    assert metrics["validation"]["n"] == 120 + 40  # best-epoch selection saw both sources
    training = json.loads((version / "training.json").read_text())["data"]
    assert training["rows"] == {"train": 400 + 160, "validation": 160, "test": 120}
    assert training["source"] == os.pathsep.join([str(small_data), str(second)])
    assert [(s["name"], s["path"], s["rows"]) for s in training["sources"]] == [
        (small_data.name, str(small_data), {"train": 400, "validation": 120, "test": 120}),
        ("second", str(second), {"train": 160, "validation": 40, "test": 40}),
    ]
    assert sorted(Path(f).name for f in training["sources"][1]["files"]) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert all(len(digest) == 64 for s in training["sources"] for digest in s["files"].values())
    assert len(training["files"]) == 6
    card = (version / "README.md").read_text()
    assert f"| test: {small_data.name} (primary) |" in card and "| test: second |" in card
    for name in (f"test: {small_data.name} (primary)", "test: second"):
        assert name in result.stdout


@pytest.mark.integration
def test_retraining_replays_from_every_source_and_tests_on_the_primary(
    trained_registry: Path, small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import emostream.trainer.retrain
    from emostream.retraining import RetrainJob, run_round
    from emostream.trainer.config import RetrainPolicy
    from emostream.trainer.data import ColumnMap

    _, second = two_sources(tmp_path)
    registry = tmp_path / "models"
    shutil.copytree(trained_registry, registry)
    seen: dict[str, object] = {}

    def fake_retrain(base: DatasetDict, snapshot: Path, *args: object, data_source: str = "") -> None:
        seen.update(rows={split: len(ds) for split, ds in base.items()}, data_source=data_source)

    monkeypatch.setattr(emostream.trainer.retrain, "retrain", fake_retrain)
    job = RetrainJob(registry, "chdb:///nowhere", (str(small_data), str(second)), ColumnMap(), RetrainPolicy())
    run_round(job, labels_file=tmp_path / "labels.csv")
    assert seen["rows"] == {"train": 400 + 3, "validation": 120 + 2, "test": 120}  # the test: the primary's
    assert seen["data_source"] == os.pathsep.join([str(small_data), str(second)])
