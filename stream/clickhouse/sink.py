"""The sink: where the worker's pipeline writes a batch (scores, dead letters, review items).

:class:`Sink` is what the pipeline needs of one; :class:`ClickHouseSink` is the one there is: one
columnar insert per table per batch. Batching is the pipeline's (``stream.worker.pipeline``), writing the
sink's. The same class serves the embedded engine (``chdb:///DIR``, chDB in this process) and a
ClickHouse server (``http(s)://user:pw@host:8123/db``), through the client of
:func:`emostream.stream.clickhouse.client.open_client`. Its calls block, so the worker runs them in an
executor thread, never on the event loop. The tables it writes are made by
:mod:`emostream.stream.clickhouse.ddl`; which rows a newer model version supersedes is decided in
:mod:`emostream.stream.clickhouse.supersede`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.insert import InsertContext
from pydantic import BaseModel

from emostream.schemas import LABELS, DeadLetter, EmotionScore, ReviewItem, ReviewLabel
from emostream.schemas.messages import as_utc
from emostream.stream.clickhouse.client import open_client
from emostream.stream.clickhouse.ddl import DDL_DIR, apply_schema, is_unknown_table
from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.clickhouse.supersede import (
    SUPERSEDED_COLUMNS,
    SUPERSEDED_ROW,
    Key,
    superseded,
    superseded_rows,
    unwritten,
)

__all__ = [
    "DEAD_LETTER_COLUMNS",
    "LABEL_COLUMNS",
    "REVIEW_COLUMNS",
    "SCORE_COLUMNS",
    "ClickHouseSink",
    "Sink",
    "review_row",
]
SCORE_COLUMNS = (
    "tweet_id",
    "brand",
    "created_at",
    "scored_at",
    "model_version",
    "label",
    "confidence",
    "margin",
    *LABELS,
)
REVIEW_COLUMNS = (*SCORE_COLUMNS[:3], "text", *SCORE_COLUMNS[4:], "reason", "queued_at")
LABEL_COLUMNS = ("tweet_id", "label", "reviewer", "labelled_at", "model_version", "confidence", "retracted")
DEAD_LETTER_COLUMNS = (
    "topic",
    "partition",
    "offset",
    "key",
    "value",
    "value_length",
    "value_sha256",
    "error",
    "failed_at",
)
log = logging.getLogger("emostream.sink")


class Sink(Protocol):
    """What the worker's pipeline needs of a sink (``stream.worker.pipeline.WorkerParts``).

    Blocking calls, made on the pipeline's one writer thread, in batch order. ``write`` must leave out
    rows it already holds (a batch comes back after a crash), and raise what it cannot write for the
    pipeline to retry; ``has_score`` lets ``stream.worker.write_errors`` tell a refused row from one
    already written.
    """

    @property
    def dsn(self) -> ClickHouseDsn:
        """Where it writes (the worker's probes and its state file name it)."""
        ...

    def write(
        self,
        scores: Sequence[EmotionScore],
        dead_letters: Sequence[DeadLetter] = (),
        reviews: Sequence[ReviewItem] = (),
    ) -> None:
        """Write one batch's rows; raises on a refusal (the caller tells a data error from an outage)."""

    def has_score(self, tweet_id: str, model_version: str) -> bool:
        """Whether this tweet's score by this version is in the table (a re-delivered batch)."""

    def close(self) -> None:
        """Release the client."""


def review_row(item: ReviewItem) -> dict[str, Any]:
    """A ``review_queue`` row: the score's columns, the tweet's text, why it was sent, and when."""
    return {
        **item.score.model_dump(),
        "text": item.tweet.text,
        "reason": item.reason,
        "queued_at": item.score.scored_at,
    }


class ClickHouseSink:
    """Writes a batch (``emotion_scores``, ``dead_letters``, ``review_queue``) and reviewers' labels.

    A :class:`Sink`, on a client of its own (:func:`~emostream.stream.clickhouse.client.open_client`).
    """

    def __init__(self, dsn: ClickHouseDsn | str) -> None:
        self.dsn = ClickHouseDsn.of(dsn)
        self.client = open_client(self.dsn)
        # One insert context per table, reused: clickhouse-connect otherwise asks the server for the
        # column types (DESCRIBE TABLE) before every insert, one more query per table per batch. Contexts
        # are not thread-safe, hence the lock; any schema change or failed insert drops them.
        self._contexts: dict[tuple[str, tuple[str, ...]], InsertContext] = {}
        self._insert_lock = threading.Lock()

    def apply_schema(self) -> None:
        """emostream's DDL (:func:`~emostream.stream.clickhouse.ddl.apply_schema`); idempotent."""
        self._contexts.clear()  # an ALTER in the DDL may have changed a column's type
        apply_schema(self.client)

    def write(
        self,
        scores: Sequence[EmotionScore],
        dead_letters: Sequence[DeadLetter] = (),
        reviews: Sequence[ReviewItem] = (),
    ) -> None:
        """One columnar insert per table, of the rows that are not there yet.

        Scores already in ``emotion_scores`` (a batch re-delivered after a crash) are left out: the
        materialized views that keep the trends see each inserted row once, so a repeat would count
        twice there even though the ReplacingMergeTree collapses it. Then every row that is no longer
        its tweet's newest version goes to ``emotion_superseded``, whose view takes it back out of the
        trends, so a tweet scored by two versions counts once (see :meth:`_write_scores`).
        Tweets are keyed by id, so one worker owns a tweet's partition at a time and the look-ups
        cannot race another writer.
        A missing table is re-created from the DDL, said loudly, and written to: someone dropped it
        (the DDL only runs at start), waiting would not bring it back, and the rows belong in it.
        """
        if scores:
            self._with_schema(("emotion_scores", "emotion_superseded"), lambda: self._write_scores(scores))
        if dead_letters:
            self._with_schema("dead_letters", lambda: self._insert("dead_letters", DEAD_LETTER_COLUMNS, dead_letters))
        if reviews:  # not filtered: a crash between the inserts can leave scores written and reviews not
            items = [review_row(item) for item in reviews]
            self._with_schema("review_queue", lambda: self._insert("review_queue", REVIEW_COLUMNS, items))

    def write_labels(self, labels: Sequence[ReviewLabel]) -> None:
        """Reviewers' labels and retractions; every one is kept (history), the latest per tweet counts."""
        if labels:
            self._with_schema("review_labels", lambda: self._insert("review_labels", LABEL_COLUMNS, labels))

    def has_score(self, tweet_id: str, model_version: str) -> bool:
        """Whether ``emotion_scores`` holds this (tweet, version) row already."""
        return bool(
            self.client.query(
                "SELECT count() FROM emotion_scores WHERE tweet_id = {id:String} AND model_version = {v:String}",
                parameters={"id": tweet_id, "v": model_version},
            ).result_rows[0][0]
        )

    def _write_scores(self, scores: Sequence[EmotionScore]) -> None:
        """The batch's new (tweet, version) pairs, then the rows they made older, or that were older.

        For each tweet of the batch the rows that must be in ``emotion_superseded`` are decided from
        the tables (:func:`emostream.stream.clickhouse.supersede.superseded`: every version but the
        newest), less those already there. So a lagging worker's older row is taken back at once, a
        re-delivered batch writes nothing, and a crash between the two inserts is repaired when the batch
        comes back (its offsets were not committed): its scores are found and the missing superseded rows
        written. Until then, and for the moment between the two inserts, such a tweet counts twice in the
        trends.
        """
        held, done = self._held_versions(sorted({score.tweet_id for score in scores}))
        new = unwritten(scores, held)
        self._insert("emotion_scores", SCORE_COLUMNS, list(new.values()))
        for tweet_id, version in new:
            held.setdefault(tweet_id, set()).add(version)
        older = superseded(held, done)
        if older:
            # Rows written before this batch are read back (only when a version changed, so the usual
            # batch pays one look-up, as before), FINAL picking the row the table keeps.
            stored = self._stored_rows(sorted({tweet_id for tweet_id, _ in older.keys() - new.keys()}))
            rows = superseded_rows(older, new, stored, datetime.now(UTC))
            self._insert("emotion_superseded", SUPERSEDED_COLUMNS, rows)

    def _held_versions(self, ids: Sequence[str]) -> tuple[dict[str, set[str]], set[Key]]:
        """For these tweets: the versions ``emotion_scores`` holds, and the (tweet, version) pairs of
        those already in ``emotion_superseded``."""
        held: dict[str, set[str]] = {}
        done: set[Key] = set()
        for tweet_id, version, taken_back in self.client.query(
            "SELECT tweet_id, model_version, (tweet_id, model_version) IN (SELECT tweet_id, model_version "
            "FROM emotion_superseded WHERE tweet_id IN {ids:Array(String)}) "
            "FROM emotion_scores WHERE tweet_id IN {ids:Array(String)}",
            parameters={"ids": ids},
        ).result_rows:
            held.setdefault(tweet_id, set()).add(version)
            if taken_back:
                done.add((tweet_id, version))
        return held, done

    def _stored_rows(self, ids: Sequence[str]) -> dict[Key, dict[str, Any]]:
        """The :data:`~emostream.stream.clickhouse.supersede.SUPERSEDED_ROW` columns of these tweets'
        rows in ``emotion_scores`` (FINAL), by (tweet, version)."""
        stored: dict[Key, dict[str, Any]] = {}
        if not ids:
            return stored
        result = self.client.query(
            f"SELECT {', '.join(SUPERSEDED_ROW)} FROM emotion_scores FINAL WHERE tweet_id IN {{ids:Array(String)}}",
            parameters={"ids": list(ids)},
        )
        for values in result.result_rows:
            row = dict(zip(SUPERSEDED_ROW, values, strict=True))
            row["created_at"] = as_utc(row["created_at"])  # clickhouse-connect returns UTC as naive datetimes
            stored[(row["tweet_id"], row["model_version"])] = row
        return stored

    def _insert(self, table: str, names: Sequence[str], rows: Sequence[BaseModel | dict[str, Any]]) -> None:
        if not rows:
            return
        columns: list[list[Any]] = [[] for _ in names]
        for row in rows:
            for column, name in zip(columns, names, strict=True):
                value = row[name] if isinstance(row, dict) else getattr(row, name)
                column.append(value.astimezone(UTC) if isinstance(value, datetime) else value)
        key = (table, tuple(names))
        with self._insert_lock:
            context = self._contexts.get(key)
            if context is None:
                context = self.client.create_insert_context(table, list(names), column_oriented=True)
            context.data = columns
            try:
                self.client.insert(context=context)
            except Exception:
                self._contexts.pop(key, None)  # the next try asks the server again (a dropped or changed table)
                raise
            self._contexts[key] = context

    def _with_schema(self, tables: str | tuple[str, ...], write: Callable[[], None]) -> None:
        try:
            write()
        except DatabaseError as exc:
            if not is_unknown_table(exc):
                raise
            names = (tables,) if isinstance(tables, str) else tables
            gone = [name for name in names if not self._exists(name)] or list(names)
            self.apply_schema()
            log.error(
                "table %s had disappeared (dropped by someone?): re-created it from %s; "
                "the rows it held before are gone, new rows go on from this batch",
                ", ".join(gone),
                DDL_DIR,
            )
            write()

    def _exists(self, table: str) -> bool:
        return bool(self.client.query("EXISTS TABLE {table:Identifier}", parameters={"table": table}).result_rows[0][0])

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Trusted SQL from emostream's own code (tests, checks). User SQL goes through ``stream.clickhouse.sql``."""
        result = self.client.query(sql)
        return list(result.column_names), [tuple(row) for row in result.result_rows]

    def close(self) -> None:
        """Close this sink's client (its chDB handle or HTTP connection)."""
        self.client.close()
