"""The emotion label set: the single source of truth for names and their integer ids; and the labels
snapshot, the file of reviewed labels a retraining round trains on.

The order is the Hugging Face Hub's ``emotion`` data set's ``ClassLabel`` order, so integer labels read
from the Hub, from the CARER text files and from our own models all mean the same thing.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

LABELS: Final[tuple[str, ...]] = ("sadness", "joy", "love", "anger", "fear", "surprise")
"""Label names in the Hub's integer order: ``LABELS[i]`` is the name of label ``i``."""

NUM_LABELS: Final[int] = len(LABELS)
ID2LABEL: Final[dict[int, str]] = dict(enumerate(LABELS))
LABEL2ID: Final[dict[str, int]] = {name: i for i, name in ID2LABEL.items()}


def label_id(value: str | int) -> int:
    """Map a label given as a name (any case) or an integer id (or its string form) to its id.

    Raises ``ValueError`` naming the accepted values, so loaders can report a bad label precisely.
    """
    if isinstance(value, bool):
        raise ValueError(f"unknown label {value!r} (expected one of {', '.join(LABELS)} or 0-{NUM_LABELS - 1})")
    if isinstance(value, int):
        if 0 <= value < NUM_LABELS:
            return value
    else:
        text = value.strip()
        if text.lower() in LABEL2ID:
            return LABEL2ID[text.lower()]
        if text.isdigit() and int(text) < NUM_LABELS:
            return int(text)
    raise ValueError(f"unknown label {value!r} (expected one of {', '.join(LABELS)} or 0-{NUM_LABELS - 1})")


SNAPSHOT_COLUMNS: Final[tuple[str, ...]] = ("tweet_id", "text", "label")
"""The columns of a labels snapshot, read by name: the reviewers' current label of each labelled item.

A snapshot is a Parquet file (Parquet, not CSV, because it round-trips every string: a text with a line
separator, a quoted newline, CR or NUL comes back exactly as it went in), one row per labelled item, in
the order of the tweet ids: ``tweet_id`` and ``text`` (the text the label was given for; a tweet id with
two labelled texts has two rows) and ``label``, a name from :data:`LABELS`. ClickHouse writes it (the
review queue's ``TRAINING_LABELS_WITH_IDS``, through ``emostream.stream.web.endpoint``); ``emostream
retrain`` trains on it, and ``emostream labels`` prints it as CSV. Its strings are ClickHouse ``String``
values, which hold bytes: emostream only ever writes UTF-8 there, but a row written another way may not be.
"""

SNAPSHOT_DECISION: Final[str] = "decision"
"""An optional column of a snapshot: how each row's label was decided from the reviewers' opinions
(``single``, ``unanimous``, ``majority``, ``adjudicated``: the ``review_decisions`` view of
``deploy/clickhouse/006_review_team.sql``). Snapshots written before it, and files a person gives, lack it."""

SNAPSHOT_WEIGHT: Final[str] = "weight"
"""An optional column of a snapshot: how much retraining trusts a row's label, from 0 to 1: the mean gold
accuracy of the reviewers who gave it (1 without gold questions, and when adjudicated). A round repeats a
reviewed tweet ``retrain_review_weight`` times that weight, in expectation. Absent: 1."""

SNAPSHOT_BATCH_ROWS: Final[int] = 16_384  # rows read at a time: a snapshot is never held in memory whole


class SnapshotError(ValueError):
    """A labels snapshot that cannot be read as text: a ``tweet_id`` or ``text`` that is not UTF-8."""


def snapshot_records(path: Path, columns: Sequence[str] = SNAPSHOT_COLUMNS) -> Iterator[tuple[Any, ...]]:
    """The ``columns`` of a labels snapshot (Parquet), row by row, read a batch at a time (not all at once).

    Raises :class:`SnapshotError` naming the column of a string that is not valid UTF-8.
    """
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=SNAPSHOT_BATCH_ROWS, columns=list(columns)):
        values = []
        for name in columns:
            try:
                values.append(batch.column(name).to_pylist())
            except UnicodeDecodeError:  # a String in ClickHouse holds bytes
                raise SnapshotError(f"{path}: a {name} in the labels snapshot is not valid UTF-8") from None
        yield from zip(*values, strict=True)
