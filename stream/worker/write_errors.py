"""Which write errors are about the rows (dead-letter them) and which are outages (wait and retry).

An outage ends by itself or by an operator: the worker keeps the batch, retries with back-off, commits
nothing past it, and reports itself not ready once it has failed for ``failing_batch_timeout``. An error
about the rows never ends: retried, it would stop every tweet behind it for good. So when ClickHouse (or
the client, serializing a value) refuses a batch for what is in it, :func:`write_isolating` writes the
batch in halves, down to the rows that fail alone, writes the rest, and returns those rows' records as
dead letters carrying ClickHouse's error.

One exception: when every row of a batch of two or more is refused, the rows are not the problem (they
passed validation; the table refuses them all: a constraint added, a column's type changed), and the
batch is an outage (:class:`TableRefusesRows`) for an operator to mend, not a stream emptied into the
dead letters.

Which is which (anything not named here counts as an outage: dead-lettering good rows on a guess would
lose them, while retrying a data error only waits, loudly, on ``/readyz``):

- data: client-side, ``ValueError`` (``UnicodeError`` included), ``OverflowError``, ``TypeError`` and
  ``struct.error`` raised while a value is serialized; ClickHouse's codes in :data:`DATA_ERROR_CODES`:
  a value it cannot parse, convert or hold, a violated constraint, a ``throwIf`` in a materialized view.
- outage: connection refused or reset, timeouts, HTTP 5xx without a data code, ``MEMORY_LIMIT_EXCEEDED``,
  ``NOT_ENOUGH_SPACE`` (a full disk), ``TOO_MANY_PARTS``, ``TABLE_IS_READ_ONLY``, Keeper errors,
  authentication and access errors (a configuration to fix, not a row), chDB's "Cannot lock file", and
  every other error.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from clickhouse_connect.driver.exceptions import DatabaseError

from emostream.schemas import DeadLetter, EmotionScore, ReviewItem
from emostream.stream.worker.isolation import failing_alone
from emostream.stream.worker.records import ConsumedRecord, dead_letter

log = logging.getLogger("emostream.worker")

DATA_ERROR_CODES = {
    6: "CANNOT_PARSE_TEXT",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    128: "TOO_LARGE_ARRAY_SIZE",
    131: "TOO_LARGE_STRING_SIZE",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    395: "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",
    407: "DECIMAL_OVERFLOW",
    469: "VIOLATED_CONSTRAINT",
}
CLIENT_DATA_ERRORS = (ValueError, OverflowError, TypeError, struct.error)


class TableRefusesRows(RuntimeError):
    """Every row of a batch refused: a problem of the table's, so an outage (retried, reported), not data."""


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the rows are wrong (see the module's table); any other error is an outage."""
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code is None:  # clickhouse-connect keeps the code in the message: "Code: 469. DB::Exception: ..."
            text = str(exc)
            code = next((number for number, name in DATA_ERROR_CODES.items() if f"({name})" in text), None)
        return code in DATA_ERROR_CODES
    return isinstance(exc, CLIENT_DATA_ERRORS)


def describe(exc: BaseException) -> str:
    """ClickHouse's error in one line (its first), for a dead letter or a log line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


@dataclass
class Rows:
    """What one write puts into ClickHouse: scores (each with the record it came from), review items,
    dead letters. A review item goes with its tweet's score."""

    scores: Sequence[EmotionScore] = ()
    sources: Sequence[ConsumedRecord] = ()
    reviews: Sequence[ReviewItem] = ()
    dead_letters: Sequence[DeadLetter] = ()
    refused: list[DeadLetter] = field(default_factory=list)  # filled by write_isolating

    def of_scores(self, indices: Sequence[int]) -> Rows:
        """These scores, their sources, and the review items of their tweets."""
        scores = [self.scores[i] for i in indices]
        ids = {score.tweet_id for score in scores}
        return Rows(scores, [self.sources[i] for i in indices], [r for r in self.reviews if r.tweet.id in ids])


class RowWriter(Protocol):
    """The sink's side that :func:`write_isolating` needs (``stream.clickhouse.sink.ClickHouseSink`` is one)."""

    def write(
        self, scores: Sequence[EmotionScore], dead_letters: Sequence[DeadLetter], reviews: Sequence[ReviewItem]
    ) -> None:
        """Insert the rows, each table's at once; raises ClickHouse's error, whether about the data or an outage."""

    def has_score(self, tweet_id: str, model_version: str) -> bool:
        """Whether the (tweet, version) score is in ClickHouse: a refused review item's score may have gone in."""


def write_isolating(sink: RowWriter, rows: Rows) -> Rows:
    """Write ``rows``; rows ClickHouse refuses for what they hold become their records' dead letters.

    Returns what was written: ``rows`` itself when everything went in at once, else the scores that went
    in, their review items, and every dead letter, the new ones (also in ``refused``) included. Outages
    are raised, from the first try or from any half (the caller retries the whole: the sink leaves out
    rows already there, so a retry writes each row once).
    """
    try:
        sink.write(rows.scores, rows.dead_letters, rows.reviews)
        return rows
    except Exception as exc:
        if not is_data_error(exc):
            raise
        log.warning(
            "ClickHouse refused a batch of %d scores for its rows (%s): finding them", len(rows.scores), describe(exc)
        )
    if rows.dead_letters:
        sink.write((), rows.dead_letters, ())

    def attempt(indices: list[int]) -> None:
        part = rows.of_scores(indices)
        sink.write(part.scores, (), part.reviews)

    failed = failing_alone(range(len(rows.scores)), attempt, is_data_error)
    refused = {i: describe(exc) for i, exc in failed.items()}
    if len(refused) == len(rows.scores) > 1:
        # Rows that passed validation all refused alike: the table refuses them (a constraint or a type
        # changed under the worker), which an operator mends; dead letters would empty the stream into the DLQ.
        raise TableRefusesRows(f"ClickHouse refuses every one of {len(refused)} rows: {next(iter(refused.values()))}")
    letters, lettered = [], set()
    for i, error in sorted(refused.items()):
        score = rows.scores[i]
        if sink.has_score(score.tweet_id, score.model_version):
            # Its score went in and a later insert of the same write (its review item) was refused: the
            # score is the record's outcome; a dead letter as well would count it twice.
            log.error(
                "ClickHouse refused the review item of tweet %r (its score is written): %s", score.tweet_id, error
            )
            continue
        letters.append(dead_letter(rows.sources[i], f"ClickHouse refused the row: {error}"))
        lettered.add(i)
    if letters:
        sink.write((), letters, ())
        log.warning("%d row(s) refused by ClickHouse went to the dead letters: %s", len(letters), letters[0].error)
    written = rows.of_scores([i for i in range(len(rows.scores)) if i not in lettered])
    written.dead_letters = [*rows.dead_letters, *letters]
    written.refused = letters
    return written
