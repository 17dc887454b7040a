"""Retraining from the review queue: a challenger trained on reviewed tweets, judged against the champion.

A round reads a snapshot of the reviewers' labels (``tweet_id,text,label``: the latest label per tweet),
continues fine-tuning the champion (the registry's
``current``) on a mix of reviewed tweets and a replay of the base training data, and promotes the
challenger only if it is better where the labels come from and not worse where the model came from:

* a fixed slice of the reviewed tweets, chosen by a hash of the tweet id, is never trained on: it is the
  hold-out on which champion and challenger are compared, the same way (fp32 argmax accuracy), and
  because the hash decides, a tweet never moves between hold-out and training from one round to the next;
* the base test split is scored the same way for both, and may not drop by more than a tolerance.

Why continue from the champion with a replay of base data, rather than retrain from the base model on
all of it: a round costs a fraction of a full training run (a few thousand examples for two epochs
instead of 17,000 for four), which keeps a round within minutes on a CPU, and the replayed base
examples keep the model from forgetting what it knew (measured in ``benchmarks/review_loop.py``).
Reviewed tweets are repeated ``review_weight`` times: they are few and come from the distribution the
model is failing on.

Lineage goes into the new version's ``retrain.json`` (parent, snapshot file and sha256, counts per
label, both models' scores, the decision and why), and the snapshot itself is kept beside it.

The snapshot is Parquet (``emostream retrain`` has ClickHouse write it), because Parquet round-trips
every string: a text with a line or paragraph separator (U+2028/9), an information separator (0x1c-0x1e),
NEL, a vertical tab or form feed, CR, a quoted newline or NUL comes back exactly as it went in, where a
line-oriented reading of CSV would split or drop it. A snapshot a person gives (``--labels``) may be
that Parquet or a ``tweet_id,text,label`` CSV, read with the csv module over the file itself (opened
with ``newline=''``, so quoted line breaks survive); either way the copy kept beside the new version is
Parquet, and the lineage's sha256 is that copy's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets

from emostream.model.registry import RETRAIN_FILE, ModelRegistry, ModelVersion
from emostream.model.runtime import EmotionModel
from emostream.schemas import LABELS, NO_EMOTION
from emostream.schemas.labels import SNAPSHOT_BATCH_ROWS, SNAPSHOT_COLUMNS
from emostream.trainer.config import RetrainPolicy, TrainConfig
from emostream.trainer.data import FEATURES, DataError
from emostream.trainer.finetune import TrainResult, fine_tune, sha256_of

SNAPSHOT_FILE = "review_labels.parquet"
COLUMNS = SNAPSHOT_COLUMNS  # the snapshot's format is the label schema's (emostream.schemas.labels)
PARQUET_MAGIC = b"PAR1"
MIN_HOLDOUT = 20  # fewer held-out tweets than this cannot tell two models apart


class RetrainError(RuntimeError):
    """A round that cannot be run: too few labels, a bad snapshot, another round running."""


@dataclass(frozen=True)
class ReviewedTweet:
    """A row of a labels snapshot: the tweet id, the text the reviewer was shown, and the label given to it."""

    tweet_id: str
    text: str
    label: str  # one of LABELS, or "none"


@dataclass(frozen=True)
class Decision:
    """Whether the challenger is promoted, and why (the reason goes into the lineage)."""

    promote: bool
    reason: str


@dataclass
class RetrainResult:
    """A finished round: the challenger's training run and the lineage written to its ``retrain.json``."""

    training: TrainResult
    record: dict[str, Any]

    @property
    def version(self) -> ModelVersion:
        """The challenger's registry version, published whether or not it was promoted."""
        return self.training.version

    @property
    def promoted(self) -> bool:
        """Whether the challenger became the registry's ``current``."""
        return self.training.promoted


def in_holdout(tweet_id: str, share: float) -> bool:
    """Whether a reviewed tweet belongs to the hold-out: a hash of its id, so the answer never changes."""
    digest = hashlib.sha256(tweet_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def snapshot_format(path: Path) -> Literal["parquet", "csv"]:
    """Parquet by its magic bytes (whatever the file's name), else CSV."""
    try:
        with path.open("rb") as handle:
            return "parquet" if handle.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC else "csv"
    except OSError as exc:
        raise DataError(path, f"cannot read the labels snapshot ({exc.strerror})") from None


def read_snapshot(path: Path) -> list[ReviewedTweet]:
    """The labels of a round, from Parquet or a ``tweet_id,text,label`` CSV; a bad row is named by its line
    (CSV) or its row number (Parquet)."""
    records = _parquet_records(path) if snapshot_format(path) == "parquet" else _csv_records(path)
    rows = []
    for line, row, record in records:
        where = f"row {row}: " if line is None else ""
        tweet_id, text, label = (record.get(name) or "" for name in COLUMNS)
        label = label.strip()
        if label not in (*LABELS, NO_EMOTION):
            raise DataError(path, f"{where}label: {label!r} is not one of {', '.join(LABELS)} or {NO_EMOTION}", line)
        # Only empty is refused: a text of nothing but spaces or separators is what the reviewer saw and
        # labelled, and one such row in ClickHouse must not stop every round from then on.
        if not tweet_id.strip() or not text:
            raise DataError(path, f"{where}tweet_id and text must not be empty", line)
        rows.append(ReviewedTweet(tweet_id, text, label))
    return rows


@contextmanager
def _any_field_size() -> Iterator[None]:
    """The csv module refuses fields over 128 KiB by default; a tweet's text has no such limit."""
    before = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(before)


def _csv_records(path: Path) -> Iterator[tuple[int | None, int, dict[str, str | None]]]:
    """(line, row, record) per row: the csv module over the file opened with ``newline=''``, so a
    quoted newline or CR stays in its field, and U+2028, 0x1c, NEL... are text (``str.splitlines`` would
    break lines at them)."""
    line = 1
    try:
        with _any_field_size(), path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise DataError(
                    path, f"missing column(s) {', '.join(sorted(missing))}; expected tweet_id,text,label", 1
                )
            line = 2
            for row, record in enumerate(reader, start=1):
                yield line, row, record
                line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (nor Parquet): {exc.reason} near line {line}") from None
    except csv.Error as exc:
        raise DataError(path, f"not readable as CSV: {exc}", line) from None
    except OSError as exc:
        raise DataError(path, f"cannot read the labels snapshot ({exc.strerror})") from None


def _parquet_records(path: Path) -> Iterator[tuple[int | None, int, dict[str, str | None]]]:
    """(None, row, record) per row (a Parquet file has no lines), read batch by batch with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid: a cut file, no footer
        raise DataError(path, f"not a readable Parquet file ({exc})") from None
    missing = set(COLUMNS) - set(file.schema_arrow.names)
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(sorted(missing))}; expected tweet_id,text,label")
    row = 0
    try:
        for batch in file.iter_batches(batch_size=SNAPSHOT_BATCH_ROWS, columns=list(COLUMNS)):
            columns = [_strings(path, batch.column(i), name, row) for i, name in enumerate(COLUMNS)]
            for values in zip(*columns, strict=True):
                row += 1
                yield None, row, dict(zip(COLUMNS, values, strict=True))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({exc})") from None


def _strings(path: Path, array: Any, name: str, first_row: int) -> list[str | None]:
    """A column's values as str: text as it is, bytes decoded as UTF-8 (each bad one named), ids as written."""
    import pyarrow as pa

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            texts: list[str | None] = array.to_pylist()
            return texts
        except UnicodeDecodeError:  # ClickHouse's String holds bytes: find the one that is not UTF-8
            array = array.cast(pa.large_binary())
            kind = array.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        values: list[str | None] = []
        for offset, value in enumerate(array.to_pylist(), start=first_row + 1):
            try:
                values.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(path, f"row {offset}: {name} is not valid UTF-8") from None
        return values
    if name == "tweet_id" and pa.types.is_integer(kind):
        return [None if value is None else str(value) for value in array.to_pylist()]
    raise DataError(path, f"column {name} holds {kind}, not text")


def write_snapshot(rows: list[ReviewedTweet], path: Path) -> None:
    """Rows as a Parquet snapshot (the copy kept of a CSV someone gave)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array([getattr(row, name) for row in rows], pa.string()) for name in COLUMNS})
    pq.write_table(table, path)


def keep_snapshot(snapshot: Path, rows: list[ReviewedTweet], destination: Path) -> None:
    """The round's labels beside the new version: a Parquet snapshot byte for byte, a CSV as Parquet."""
    if snapshot_format(snapshot) == "parquet":
        shutil.copyfile(snapshot, destination)
    else:
        write_snapshot(rows, destination)


def split_reviewed(rows: list[ReviewedTweet], share: float) -> tuple[list[ReviewedTweet], list[ReviewedTweet]]:
    """(training, hold-out) among the tweets with an emotion label; ``none`` is no training example."""
    usable = [row for row in rows if row.label != NO_EMOTION]
    holdout = [row for row in usable if in_holdout(row.tweet_id, share)]
    return [row for row in usable if not in_holdout(row.tweet_id, share)], holdout


def decide(champion: dict[str, float], challenger: dict[str, float], margin: float, tolerance: float) -> Decision:
    """Promote when the challenger gains ``margin`` on the hold-out and loses at most ``tolerance`` on base test."""
    gain = challenger["holdout"] - champion["holdout"]
    loss = champion["base_test"] - challenger["base_test"]
    if gain < margin:
        return Decision(False, f"hold-out accuracy {gain * 100:+.1f} pt, less than the {margin * 100:.1f} pt margin")
    if loss > tolerance:
        return Decision(
            False, f"base test accuracy {-loss * 100:+.2f} pt, worse than the {tolerance * 100:.2f} pt tolerance"
        )
    return Decision(True, f"hold-out accuracy {gain * 100:+.1f} pt, base test {-loss * 100:+.2f} pt")


def accuracy(model: EmotionModel, texts: list[str], labels: list[int]) -> float:
    """Share of ``texts`` whose top label is the gold label id: the score champion and challenger are compared by."""
    return float((model.predict_proba(texts).argmax(axis=-1) == np.array(labels)).mean())


def as_dataset(rows: list[ReviewedTweet], repeat: int = 1) -> Dataset:
    """Reviewed tweets as training data, each ``repeat`` times; ``none`` rows must be left out first (no label id)."""
    return Dataset.from_dict(
        {"text": [row.text for row in rows] * repeat, "label": [LABELS.index(row.label) for row in rows] * repeat},
        features=FEATURES,
    )


def retrain(
    base: DatasetDict,
    snapshot: Path,
    registry: ModelRegistry,
    policy: RetrainPolicy = RetrainPolicy(),
    data_source: str = "",
) -> RetrainResult:
    """One round: train a challenger from the champion, judge it, publish it, promote it if it earned it."""
    champion = registry.require_current()
    rows = read_snapshot(snapshot)
    train_rows, holdout = split_reviewed(rows, policy.retrain_holdout)
    if not train_rows or len(holdout) < MIN_HOLDOUT:
        raise RetrainError(
            f"{snapshot}: {len(train_rows)} reviewed tweets to train on and {len(holdout)} held out "
            f"(of {len(rows)} labels); a round needs some of the first and at least {MIN_HOLDOUT} of the second"
        )
    replay = base["train"].shuffle(seed=policy.seed).select(range(min(policy.retrain_replay, len(base["train"]))))
    reviewed = as_dataset(train_rows, policy.retrain_review_weight)
    mixed = concatenate_datasets([replay, reviewed]).shuffle(seed=policy.seed)
    data = DatasetDict(train=mixed, validation=base["validation"], test=base["test"])
    config = TrainConfig(
        base_model=str(champion.path.resolve()),
        epochs=policy.retrain_epochs,
        batch_size=policy.batch_size,
        learning_rate=policy.retrain_learning_rate,
        warmup_ratio=policy.warmup_ratio,
        weight_decay=policy.weight_decay,
        max_length=policy.max_length,
        seed=policy.seed,
        select_best_epoch=False,
    )
    record: dict[str, Any] = {}

    def judge(staged: Path, metrics: dict[str, Any]) -> bool:
        texts, labels = [r.text for r in holdout], [LABELS.index(r.label) for r in holdout]
        old = EmotionModel(champion.path, max_length=policy.max_length)
        new = EmotionModel(staged, max_length=policy.max_length)
        scores = {
            "champion": {
                "holdout": accuracy(old, texts, labels),
                "base_test": accuracy(old, base["test"]["text"], base["test"]["label"]),
            },
            "challenger": {"holdout": accuracy(new, texts, labels), "base_test": metrics["test"]["accuracy"]},
        }
        decision = decide(scores["champion"], scores["challenger"], policy.retrain_margin, policy.retrain_tolerance)
        keep_snapshot(snapshot, rows, staged / SNAPSHOT_FILE)
        record.update(
            {
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "parent": champion.name,
                "labels": {
                    "snapshot": str(snapshot),
                    "snapshot_format": snapshot_format(snapshot),
                    "snapshot_sha256": sha256_of(snapshot),
                    "file": SNAPSHOT_FILE,
                    "sha256": sha256_of(staged / SNAPSHOT_FILE),
                    "rows": len(rows),
                    "per_label": dict(sorted(Counter(row.label for row in rows).items())),
                    "trained_on": len(train_rows),
                    "held_out": len(holdout),
                },
                "policy": policy.model_dump(),
                "base_data": {"source": data_source, "replayed": len(replay), "test": len(base["test"])},
                "scores": scores,
                "decision": {"promoted": decision.promote, "reason": decision.reason},
            }
        )
        (staged / RETRAIN_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return decision.promote

    training = fine_tune(data, config, registry, data_source=data_source, judge=judge)
    return RetrainResult(training, record)


def labels_since_last_round(registry: ModelRegistry) -> int:
    """Rows of the newest round's snapshot (0 before the first round): ``--watch`` counts new labels from it."""
    for version in reversed(registry.versions()):
        lineage = version.lineage()
        if lineage:
            return int(lineage["labels"]["rows"])
    return 0
