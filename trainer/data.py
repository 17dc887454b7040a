"""Loading the emotion data as a ``datasets.DatasetDict`` from local files or the Hugging Face Hub.

Every source ends up with the same shape: ``text`` (string) and ``label`` (``ClassLabel`` in the Hub's
order, see :mod:`emostream.schemas.labels`), in the splits ``train``, ``validation`` and ``test``. Local files are
read with the standard library rather than ``datasets.load_dataset`` so that every bad row can be
reported with its file and line number: a user with 16,000 rows needs to know *which* row is wrong.

A training run may read several sources (:func:`load_sources`, a :class:`TrainingData`): their train and
validation splits are concatenated, so the model learns from all of them and its best epoch is chosen on
all of them, while each source's test split stays apart, so a run reports how well it does on each domain.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

from emostream.schemas import LABELS, label_id

SPLITS = ("train", "validation", "test")
SPLIT_FILE_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "val", "valid", "dev"),
    "test": ("test",),
}
FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".json", ".jsonl")
FEATURES = Features({"text": Value("string"), "label": ClassLabel(names=list(LABELS))})


class DataError(ValueError):
    """A data source that cannot be used, with the file (and line) to blame."""

    def __init__(self, source: str | Path, problem: str, line: int | None = None) -> None:
        self.source, self.problem, self.line = str(source), problem, line
        where = f"{source}:{line}" if line is not None else str(source)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ColumnMap:
    """Which columns (CSV) or keys (JSON) hold the tweet's text and its label."""

    text: str = "text"
    label: str = "label"


@dataclass(frozen=True)
class Row:
    """One labelled example as read from a file: the stripped text and the label's integer id."""

    text: str
    label: int


def load_emotion(source: str | Path, columns: ColumnMap = ColumnMap(), seed: int = 42) -> DatasetDict:
    """Load the data from a directory of split files, a single file, or a Hub data set id.

    * a directory holding ``train``/``val``/``test`` files (``.txt`` in CARER's ``text;label`` form,
      ``.csv``/``.tsv`` with a header, ``.json`` or ``.jsonl``);
    * a single such file, split 80/10/10 (stratified by label, ``seed``);
    * anything else is taken as a Hub data set id, e.g. ``emotion`` or ``dair-ai/emotion``.
    """
    path = Path(source)
    if path.is_dir():
        files = split_files(path)
        return DatasetDict({split: to_dataset(read_rows(file, columns)) for split, file in files.items()})
    if path.is_file():
        return _split_single(to_dataset(read_rows(path, columns)), seed)
    if path.suffix in FILE_SUFFIXES or str(source).startswith((".", "/", "~")):
        raise DataError(source, "no such file or directory")
    return load_from_hub(str(source), columns)


def split_files(directory: Path) -> dict[str, Path]:
    """Find the file of each split in ``directory`` by its name (``val.txt``, ``validation.csv``, ...)."""
    found: dict[str, Path] = {}
    for split, stems in SPLIT_FILE_STEMS.items():
        candidates = [directory / f"{stem}{suffix}" for stem in stems for suffix in FILE_SUFFIXES]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            names = ", ".join(f"{stem}.*" for stem in stems)
            raise DataError(directory, f"no {split} split: expected one of {names} ({'/'.join(FILE_SUFFIXES)})")
        if len(existing) > 1:
            raise DataError(directory, f"several files for the {split} split: {', '.join(e.name for e in existing)}")
        found[split] = existing[0]
    return found


def source_files(source: str | Path) -> list[Path]:
    """The local files a source reads (empty for a Hub id), for fingerprinting a training run."""
    path = Path(source)
    if path.is_dir():
        return list(split_files(path).values())
    return [path] if path.is_file() else []


def source_name(source: str | Path) -> str:
    """A short name for a source, for its test split's key in reports: a directory's name (``emotion``,
    ``goemotions``), a file's stem (``labels`` for ``labels.csv``), or a Hub id as it is given."""
    path = Path(source)
    if path.is_dir():
        return path.resolve().name
    if path.is_file():
        return path.stem
    return str(source)


@dataclass(frozen=True)
class SourceData:
    """One source of a training run as loaded: its name (unique within the run), where it is (as given),
    the local files it was read from (none for a Hub id) and its own ``train``/``validation``/``test``."""

    name: str
    location: str
    files: tuple[Path, ...]
    splits: DatasetDict

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split of this source alone."""
        return {split: len(dataset) for split, dataset in self.splits.items()}


@dataclass(frozen=True)
class TrainingData:
    """What a training run reads from one or more sources.

    ``dataset`` has the usual three splits, so everything that takes a ``DatasetDict`` works unchanged:
    ``train`` and ``validation`` are every source's, concatenated in the order given (best-epoch selection
    sees all of them); ``test`` is the primary (first) source's, the split that promotion, retraining's
    base-test tolerance and ``emostream evaluate --split test`` read. ``sources`` keeps each source's own
    splits, so each test split can be reported by the source's name (:attr:`tests`). With one source,
    ``dataset`` is exactly :func:`load_emotion`'s result."""

    dataset: DatasetDict
    sources: tuple[SourceData, ...]

    @property
    def primary(self) -> SourceData:
        """The first source: its test split is ``dataset["test"]``."""
        return self.sources[0]

    @property
    def tests(self) -> dict[str, Dataset]:
        """Every source's test split by its name, the primary first."""
        return {source.name: source.splits["test"] for source in self.sources}

    @property
    def files(self) -> list[Path]:
        """Every local file the run reads, for fingerprinting it."""
        return [file for source in self.sources for file in source.files]

    @property
    def locations(self) -> list[str]:
        """The sources as given, in order."""
        return [source.location for source in self.sources]


def load_sources(
    sources: str | Path | Sequence[str | Path], columns: ColumnMap = ColumnMap(), seed: int = 42
) -> TrainingData:
    """Load one or more sources with :func:`load_emotion` (same ``columns`` and ``seed`` for each) into a
    :class:`TrainingData`: train and validation concatenated, each test split kept apart.

    A bad file raises :class:`DataError` naming that file and line, whichever source it is in; a source
    given twice is refused rather than silently weighing it double. Names that two sources share (two
    directories both called ``emotion``) get ``-2``, ``-3``, ... in the order given."""
    given = [sources] if isinstance(sources, str | Path) else list(sources)
    if not given:
        raise DataError("(no data source)", "give at least one data source")
    loaded: list[SourceData] = []
    seen: dict[str, str] = {}
    for source in given:
        key = str(Path(source).resolve()) if Path(source).exists() else str(source)
        if key in seen:
            raise DataError(source, f"given twice as a data source (also as {seen[key]!r})")
        seen[key] = str(source)
        name = base = source_name(source)
        suffix = 2
        while name in {s.name for s in loaded}:
            name, suffix = f"{base}-{suffix}", suffix + 1
        splits = load_emotion(source, columns, seed)
        loaded.append(SourceData(name, str(source), tuple(source_files(source)), splits))
    if len(loaded) == 1:
        return TrainingData(loaded[0].splits, tuple(loaded))
    dataset = DatasetDict(
        {
            "train": concatenate_datasets([s.splits["train"] for s in loaded]),
            "validation": concatenate_datasets([s.splits["validation"] for s in loaded]),
            "test": loaded[0].splits["test"],
        }
    )
    return TrainingData(dataset, tuple(loaded))


def read_rows(path: Path, columns: ColumnMap = ColumnMap()) -> list[Row]:
    """Read and validate every row of one file; the first bad row raises a :class:`DataError`."""
    text = _decode(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        records = _semicolon_records(path, text)
        columns = ColumnMap()
    elif suffix in (".csv", ".tsv"):
        records = _csv_records(path, text, "\t" if suffix == ".tsv" else ",", columns)
    elif suffix in (".json", ".jsonl"):
        records = _json_records(path, text)
    else:
        raise DataError(path, f"unsupported file type {suffix!r} (use one of {', '.join(FILE_SUFFIXES)})")
    rows = [_validate(path, line, record, columns) for line, record in records]
    if not rows:
        raise DataError(path, "the file holds no rows")
    return rows


def load_from_hub(dataset_id: str, columns: ColumnMap = ColumnMap()) -> DatasetDict:
    """Load a data set from the Hub and bring it to our shape (works only where the Hub is reachable)."""
    from datasets import load_dataset

    try:
        raw = load_dataset(dataset_id)
    except Exception as exc:  # datasets raises many types for "offline", "not found", "no access"
        raise DataError(
            dataset_id,
            f"could not load it from the Hugging Face Hub ({type(exc).__name__}: {exc}); "
            "pass a local directory or file with --data",
        ) from exc
    if "validation" not in raw and "val" in raw:
        raw["validation"] = raw.pop("val")
    missing = [split for split in SPLITS if split not in raw]
    if missing:
        raise DataError(dataset_id, f"the Hub data set has no {', '.join(missing)} split(s)")
    result = {}
    for split in SPLITS:
        data = raw[split]
        for name in (columns.text, columns.label):
            if name not in data.column_names:
                raise DataError(dataset_id, f"missing column {name!r} in split {split} (has {data.column_names})")
        label_feature = data.features[columns.label]
        names = label_feature.names if isinstance(label_feature, ClassLabel) else None
        rows = [
            _validate(f"{dataset_id}[{split}]", i + 1, {"text": t, "label": names[y] if names else y}, ColumnMap())
            for i, (t, y) in enumerate(zip(data[columns.text], data[columns.label], strict=True))
        ]
        result[split] = to_dataset(rows)
    return DatasetDict(result)


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, f"bad encoding: byte 0x{raw[exc.start]:02x} is not valid UTF-8", line) from exc


def lines(text: str) -> list[str]:
    """The file's lines, split where a line ends (LF, or CRLF) and nowhere else.

    ``str.splitlines`` also splits at U+2028, U+2029, NEL (\\x85), \\x0b, \\x0c and \\x1c-\\x1e, which real
    posts contain inside their text (and JSON allows raw in a string): a row would be cut in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _semicolon_records(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """CARER's format: ``text;label`` per line; the label is after the last ``;``."""
    for number, line in enumerate(lines(text), start=1):
        if not line.strip():
            continue
        body, sep, label = line.rpartition(";")
        if not sep:
            raise DataError(path, "expected 'text;label' but found no ';'", number)
        yield number, {"text": body, "label": label}


def _csv_records(path: Path, text: str, delimiter: str, columns: ColumnMap) -> Iterator[tuple[int, dict]]:
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # the module's 128 KiB default cuts long texts
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    for name in (columns.text, columns.label):
        if name not in header:
            raise DataError(path, f"missing column {name!r} (the header has {', '.join(header) or 'nothing'})", 1)
    start = 2
    for record in reader:
        yield start, record
        start = reader.line_num + 1


def _json_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """A JSON array of objects, or JSON Lines (one object a line), as ``datasets`` accepts for .json."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON: {exc.msg}", exc.lineno) from exc
        if not isinstance(records, list):
            raise DataError(path, f"expected a JSON array of objects, got {type(records).__name__}", 1)
        yield from enumerate(records, start=1)  # for an array the "line" is the record's position
        return
    for number, line in enumerate(lines(text), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON: {exc.msg}", number) from exc


def _validate(path: str | Path, line: int, record: object, columns: ColumnMap) -> Row:
    if not isinstance(record, dict):
        raise DataError(path, f"expected an object with {columns.text!r} and {columns.label!r}", line)
    for name in (columns.text, columns.label):
        if record.get(name) is None:
            raise DataError(path, f"missing column {name!r}", line)
    text = record[columns.text]
    if not isinstance(text, str):
        raise DataError(path, f"text must be a string, got {type(text).__name__}", line)
    if not text.strip():
        raise DataError(path, "empty text", line)
    try:
        label = label_id(record[columns.label])
    except ValueError as exc:
        raise DataError(path, str(exc), line) from None
    return Row(text=text.strip(), label=label)


def to_dataset(rows: list[Row]) -> Dataset:
    """The rows as a ``Dataset`` with the shared ``FEATURES`` (``label`` a ``ClassLabel`` in the Hub's order)."""
    return Dataset.from_dict({"text": [r.text for r in rows], "label": [r.label for r in rows]}, features=FEATURES)


def _split_single(data: Dataset, seed: int) -> DatasetDict:
    first = data.train_test_split(test_size=0.2, stratify_by_column="label", seed=seed)
    held_out = first["test"].train_test_split(test_size=0.5, stratify_by_column="label", seed=seed)
    return DatasetDict({"train": first["train"], "validation": held_out["train"], "test": held_out["test"]})
