"""Loading the emotion data from every supported source, and the errors for broken files."""

import json
from pathlib import Path

import pytest

from emostream.schemas import LABELS
from emostream.trainer.data import ColumnMap, DataError, load_emotion, read_rows, source_files


def write_split_dir(directory: Path, train: str, val: str = "i am happy;joy\n", test: str = "so sad;sadness\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.txt").write_text(train)
    (directory / "val.txt").write_text(val)
    (directory / "test.txt").write_text(test)
    return directory


def test_loads_the_real_files_with_the_hub_label_order(shared_data: Path) -> None:
    data = load_emotion(shared_data)
    assert {split: len(ds) for split, ds in data.items()} == {"train": 16000, "validation": 2000, "test": 2000}
    assert data["train"].features["label"].names == list(LABELS)
    counts = {name: 0 for name in LABELS}
    for label in data["test"]["label"]:
        counts[LABELS[label]] += 1
    assert counts == {"sadness": 581, "joy": 695, "love": 159, "anger": 275, "fear": 224, "surprise": 66}
    assert len(source_files(shared_data)) == 3


def test_unknown_label_names_file_line_and_label(tmp_path: Path) -> None:
    directory = write_split_dir(tmp_path, "i feel fine;joy\n\ni am so bored;boredom\n")
    with pytest.raises(DataError) as info:
        load_emotion(directory)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{directory / 'train.txt'}:3: unknown label 'boredom'")


@pytest.mark.parametrize(
    ("train", "line", "problem"),
    [
        ("ok;joy\n   ;sadness\n", 2, "empty text"),
        ("ok;joy\nno separator here\n", 2, "no ';'"),
        (b"ok;joy\nbad \xff byte;joy\n", 2, "bad encoding"),
    ],
)
def test_broken_text_files(tmp_path: Path, train: str | bytes, line: int, problem: str) -> None:
    directory = write_split_dir(tmp_path, "")
    file = directory / "train.txt"
    file.write_bytes(train if isinstance(train, bytes) else train.encode())
    with pytest.raises(DataError, match=problem) as info:
        load_emotion(directory)
    assert info.value.line == line
    assert info.value.source == str(file)


def test_csv_with_a_column_mapping(tmp_path: Path) -> None:
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.csv").write_text('tweet,emotion\n"so happy, really",joy\n"scared",4\n')
    data = load_emotion(tmp_path, ColumnMap(text="tweet", label="emotion"))
    assert data["validation"]["text"] == ["so happy, really", "scared"]
    assert data["validation"]["label"] == [1, 4]


def test_csv_missing_column_lists_the_header(tmp_path: Path) -> None:
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.csv").write_text("tweet,emotion\nhello,joy\n")
    with pytest.raises(DataError, match="missing column 'text' \\(the header has tweet, emotion\\)"):
        load_emotion(tmp_path)


def test_csv_line_numbers_count_multiline_fields(tmp_path: Path) -> None:
    for split in ("validation", "test"):
        (tmp_path / f"{split}.csv").write_text("text,label\nfine,joy\n")
    (tmp_path / "train.csv").write_text('text,label\n"two\nlines",joy\nthird,grumpy\n')
    with pytest.raises(DataError, match="grumpy") as info:
        load_emotion(tmp_path)
    assert info.value.line == 4


def test_jsonl_and_json_array(tmp_path: Path) -> None:
    rows = [{"text": "yay", "label": "joy"}, {"text": "grr", "label": "anger"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "validation.json").write_text(json.dumps(rows))
    (tmp_path / "test.json").write_text("\n".join(json.dumps(r) for r in rows))  # JSON Lines in .json
    data = load_emotion(tmp_path)
    assert [len(ds) for ds in data.values()] == [2, 2, 2]
    assert data["test"]["label"] == [1, 3]


def test_jsonl_wrong_type_and_bad_json(tmp_path: Path) -> None:
    for split in ("validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"text": "a", "label": 0}\n')
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 0}\n{"text": 5, "label": 0}\n')
    with pytest.raises(DataError, match="text must be a string") as info:
        load_emotion(tmp_path)
    assert info.value.line == 2
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", \n')
    with pytest.raises(DataError, match="invalid JSON"):
        load_emotion(tmp_path)


def test_single_file_is_split_stratified(shared_data: Path, tmp_path: Path) -> None:
    file = tmp_path / "all.txt"
    file.write_text("\n".join((shared_data / "train.txt").read_text().splitlines()[:1000]) + "\n")
    data = load_emotion(file, seed=1)
    assert [len(data[s]) for s in ("train", "validation", "test")] == [800, 100, 100]
    assert not set(data["train"]["text"]) & set(data["test"]["text"])


def test_missing_split_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a;joy\n")
    with pytest.raises(DataError, match="no validation split"):
        load_emotion(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load_emotion(tmp_path / "nope.csv")


def test_unreachable_hub_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="could not load it from the Hugging Face Hub"):
        load_emotion("no-such-user/no-such-dataset")


def test_rows_end_at_line_ends_only_so_separators_inside_a_text_stay_in_it(tmp_path: Path) -> None:
    """U+2028, NEL, \\x0b, \\x0c and \\x1c-\\x1e are text in real posts; ``str.splitlines`` would cut a row there."""
    inside = "one\u2028two\u2029three\x85four\x0bfive\x0csix\x1cseven\x1deight\x1enine"
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"text": inside, "label": "joy"}, ensure_ascii=False) + "\r\n" + '{"text": "b", "label": "fear"}\n'
    )
    assert [(r.text, r.label) for r in read_rows(tmp_path / "rows.jsonl")] == [(inside, 1), ("b", 4)]
    (tmp_path / "rows.txt").write_text(f"{inside};joy\r\nb;fear\n")
    assert [(r.text, r.label) for r in read_rows(tmp_path / "rows.txt")] == [(inside, 1), ("b", 4)]
    long = "a" * 200_000  # over the csv module's default field limit of 128 KiB
    (tmp_path / "rows.csv").write_text(f'text,label\n"{long}",joy\n')
    assert [r.text for r in read_rows(tmp_path / "rows.csv")] == [long]
