"""The ClickHouse sink: one columnar insert per table per batch (scores, dead letters, review items).

The same class serves the embedded engine (``chdb:///DIR``, chDB in this process) and a ClickHouse
server (``http(s)://user:pw@host:8123/db``), through clickhouse-connect. Its calls block, so the worker
runs them in an executor thread, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.insert import InsertContext
from emostream.model.registry import version_order
from emostream.schemas import LABELS, DeadLetter, EmotionScore, ReviewItem, ReviewLabel
from pydantic import BaseModel

# the repository root in a checkout, the emostream package in a wheel (deploy/ is mapped to emostream.deploy)
DDL_DIR = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
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
SUPERSEDED_COLUMNS = (
    "tweet_id",
    "model_version",
    "superseded_by",
    "brand",
    "created_at",
    "label",
    *LABELS,
    "superseded_at",
)
# What the rollup must take back for a superseded row: its own columns, from emotion_scores.
SUPERSEDED_ROW = ("tweet_id", "model_version", "brand", "created_at", "label", *LABELS)
UNKNOWN_TABLE = 60  # ClickHouse's error code for a table that does not exist
log = logging.getLogger("emostream.sink")


class SchemaError(RuntimeError):
    """emostream's tables or views cannot be created here (usually: an older table of another shape)."""


def review_row(item: ReviewItem) -> dict[str, Any]:
    """A ``review_queue`` row: the score's columns, the tweet's text, why it was sent, and when."""
    return {
        **item.score.model_dump(),
        "text": item.tweet.text,
        "reason": item.reason,
        "queued_at": item.score.scored_at,
    }


def chdb_path(dsn: str) -> Path | None:
    """The data directory of a ``chdb:///DIR`` DSN, or None for a server DSN."""
    if not dsn.startswith("chdb://"):
        return None
    location = dsn.removeprefix("chdb://")
    return Path(location) if location.startswith("/") else None


def ddl_statements(directory: Path = DDL_DIR) -> list[str]:
    """The statements of every ``*.sql`` file, in file-name order (comments stripped)."""
    statements: list[str] = []
    for file in sorted(directory.glob("*.sql")):
        text = "\n".join(line for line in file.read_text().splitlines() if not line.lstrip().startswith("--"))
        statements += [s.strip() for s in text.split(";") if s.strip()]
    return statements


class ClickHouseSink:
    """Writes a batch (``emotion_scores``, ``dead_letters``, ``review_queue``) and reviewers' labels."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        path = chdb_path(dsn)
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
        self.client = clickhouse_connect.get_client(dsn=dsn)
        # One insert context per table, reused: clickhouse-connect otherwise asks the server for the
        # column types (DESCRIBE TABLE) before every insert, one more query per table per batch. Contexts
        # are not thread-safe, hence the lock; any schema change or failed insert drops them.
        self._contexts: dict[tuple[str, tuple[str, ...]], InsertContext] = {}
        self._insert_lock = threading.Lock()

    def apply_schema(self) -> None:
        """Idempotent: every statement is ``CREATE ... IF NOT EXISTS``."""
        self._contexts.clear()  # an ALTER in the DDL may have changed a column's type
        for statement in ddl_statements():
            try:
                self.client.command(statement)
            except DatabaseError as exc:
                if self._migration_for_the_local_table(statement, exc):
                    continue
                words = statement.split()
                what = " ".join(words[: words.index("EXISTS") + 2] if "EXISTS" in words else words[:4])
                raise SchemaError(
                    f"ClickHouse refused emostream's DDL ({what}): {str(exc).splitlines()[0]}. "
                    f"A table of that name with another shape? The DDL is in {DDL_DIR}"
                ) from None

    def _migration_for_the_local_table(self, statement: str, exc: DatabaseError) -> bool:
        """An ALTER a Distributed table cannot take (a new sorting key): on a cluster the tables are
        ``*_local`` behind Distributed ones, and ``cluster/`` DDL migrates those; nothing to do here."""
        if not statement.startswith("ALTER TABLE") or "NOT_IMPLEMENTED" not in str(exc):
            return False
        table = statement.split()[2]
        engine = self.client.query(
            "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        ).result_rows
        if not engine or engine[0][0] != "Distributed":
            return False
        log.info("%s is Distributed: its local tables are migrated by the cluster DDL, not here", table)
        return True

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
        the tables (every version but the newest, by :func:`emostream.model.registry.version_order`), less those
        already there. So a lagging worker's older row is taken back at once, a re-delivered batch
        writes nothing, and a crash between the two inserts is repaired when the batch comes back (its
        offsets were not committed): its scores are found and the missing superseded rows written.
        Until then, and for the moment between the two inserts, such a tweet counts twice in the trends.
        """
        ids = sorted({score.tweet_id for score in scores})
        versions: dict[str, set[str]] = {}  # tweet -> the versions emotion_scores holds
        superseded: set[tuple[str, str]] = set()
        for tweet_id, version, done in self.client.query(
            "SELECT tweet_id, model_version, (tweet_id, model_version) IN (SELECT tweet_id, model_version "
            "FROM emotion_superseded WHERE tweet_id IN {ids:Array(String)}) "
            "FROM emotion_scores WHERE tweet_id IN {ids:Array(String)}",
            parameters={"ids": ids},
        ).result_rows:
            versions.setdefault(tweet_id, set()).add(version)
            if done:
                superseded.add((tweet_id, version))
        new: dict[tuple[str, str], EmotionScore] = {}  # a tweet twice in one batch is still one row
        for score in scores:
            if score.model_version not in versions.get(score.tweet_id, ()):
                new.setdefault((score.tweet_id, score.model_version), score)
        self._insert("emotion_scores", SCORE_COLUMNS, list(new.values()))
        for tweet_id, version in new:
            versions.setdefault(tweet_id, set()).add(version)
        older: dict[tuple[str, str], str] = {}  # (tweet, version) to take back -> the tweet's newest version
        for tweet_id, held in versions.items():
            newest = max(held, key=version_order)
            older |= {(tweet_id, v): newest for v in held if v != newest and (tweet_id, v) not in superseded}
        if older:
            self._insert("emotion_superseded", SUPERSEDED_COLUMNS, self._superseded_rows(older, new))

    def _superseded_rows(
        self, older: dict[tuple[str, str], str], new: dict[tuple[str, str], EmotionScore]
    ) -> list[dict[str, Any]]:
        """``emotion_superseded`` rows: each older (tweet, version) row's columns and its newest version.

        Rows of this batch come from the batch; rows written before are read back (only when a version
        changed, so the usual batch pays one look-up, as before), FINAL picking the row the table keeps.
        """
        stored: dict[tuple[str, str], dict[str, Any]] = {}
        earlier = sorted({tweet_id for tweet_id, version in older if (tweet_id, version) not in new})
        if earlier:
            result = self.client.query(
                f"SELECT {', '.join(SUPERSEDED_ROW)} FROM emotion_scores FINAL WHERE tweet_id IN {{ids:Array(String)}}",
                parameters={"ids": earlier},
            )
            for values in result.result_rows:
                row = dict(zip(SUPERSEDED_ROW, values, strict=True))
                if row["created_at"].tzinfo is None:  # clickhouse-connect returns UTC as naive datetimes
                    row["created_at"] = row["created_at"].replace(tzinfo=UTC)
                stored[(row["tweet_id"], row["model_version"])] = row
        now = datetime.now(UTC)
        rows = []
        for key, newest in older.items():
            row = new[key].model_dump(include=set(SUPERSEDED_ROW)) if key in new else stored[key]
            rows.append({**row, "superseded_by": newest, "superseded_at": now})
        return rows

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
            if getattr(exc, "code", None) != UNKNOWN_TABLE and "UNKNOWN_TABLE" not in str(exc):
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
        self.client.close()
