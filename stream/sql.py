"""User SQL: read-only by ClickHouse's own rules, one statement at a time, bounded in time and size.

``emostream sql`` and the worker's web endpoint run what a person typed, so the statement is untrusted
input. The guards are the engine's, not a pattern on the text:

- a client of its own (its own chDB handle, or its own HTTP requests), never the scoring thread's,
  whose session runs with ``readonly = 1``: no writes, no DDL, no ``SET``/``SETTINGS``, and no table
  function at all (``file``, ``url``, ``s3``, ``remote``, ``executable``... are refused by the engine);
  ``max_execution_time`` and result-size limits are set before ``readonly`` locks them;
- the engine's parser (``formatQuerySingleLine``) accepts exactly one statement;
- the engine's AST (``EXPLAIN AST``) must be a query that only reads (SELECT, SHOW, DESCRIBE, EXISTS,
  EXPLAIN); ``KILL``, ``SYSTEM``, ``USE`` and the like are refused even where ``readonly`` would allow them;
- the embedded engine (chDB) runs inside this process with its file access and no users, so two things
  ``readonly`` lets through there are refused from the AST as well: the ``file()`` function, which reads
  any file, and ``INTO OUTFILE``, which writes one.

In production the query DSN names a ClickHouse user that can only SELECT emostream's tables, with a
read-only settings profile (``deploy/clickhouse/access/``): then the server enforces all of it too.

Results travel as ClickHouse's own ``JSONCompact`` so numbers print as ClickHouse prints them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from schemas.settings import Settings

READING_STATEMENTS = (
    "SelectWithUnionQuery",
    "SelectIntersectExceptQuery",
    "Show",
    "Describe",
    "Exists",
    "Explain",
)
FUNCTIONS_THAT_REACH_OUTSIDE = frozenset({"file"})  # table functions are already refused by readonly


class SqlError(Exception):
    """A statement ClickHouse refused or could not run; the message is ClickHouse's (or names the rule)."""


class Number(float):
    """A float that prints exactly as ClickHouse printed it: Float32 0.905 stays ``0.905``."""

    text: str

    def __new__(cls, text: str) -> Number:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


@dataclass
class SqlResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    @classmethod
    def from_json_compact(cls, body: bytes) -> SqlResult:
        """Parse ClickHouse's ``JSONCompact`` output, keeping each float's text (see :class:`Number`)."""
        if not body.strip():
            return cls([], [], [])
        document = json.loads(body, parse_float=Number)
        meta = document.get("meta", [])
        return cls([c["name"] for c in meta], [c["type"] for c in meta], document.get("data", []))


def session_settings(settings: Settings) -> dict[str, Any]:
    """What every user statement runs under; ``readonly`` comes last because it freezes the others."""
    return {
        "max_execution_time": settings.sql_timeout,
        "max_result_rows": settings.sql_max_rows,
        "max_result_bytes": settings.sql_max_bytes,
        "result_overflow_mode": "throw",
        "output_format_json_quote_64bit_integers": 0,
        "output_format_json_validate_utf8": 1,  # a dead letter's raw bytes must not break the JSON
        "readonly": 1,
    }


class ReadOnlySql:
    """A ClickHouse client for untrusted statements. Blocking: call it from a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        from stream.sink import chdb_path

        self.dsn = settings.resolved_query_dsn()
        self.embedded = self.dsn.startswith("chdb://")
        self._limits = session_settings(settings)
        directory = chdb_path(self.dsn)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.client = self._connect()

    def _connect(self) -> Any:
        import clickhouse_connect

        client = clickhouse_connect.get_client(dsn=self.dsn)
        if self.embedded:
            # A chDB handle of its own: its session state is separate from the writer's handle. The
            # engine shares the worker's cores with the model: user SQL gets one of them, not all.
            for name, value in {"max_threads": 1, **self._limits}.items():
                client.command(f"SET {name} = {value!r}")
            return client
        # Over HTTP each request carries the settings. A user whose profile is already read-only (the
        # one in deploy/clickhouse/access/) may not change settings at all: its profile rules instead.
        server_readonly = client.server_settings.get("readonly")
        if server_readonly is None or server_readonly.value == "0":
            for name, value in self._limits.items():
                client.set_client_setting(name, value)
        return client

    def run(self, statement: str) -> bytes:
        """The statement's result as ClickHouse's ``JSONCompact`` bytes, or :class:`SqlError`."""
        with self._lock:
            try:
                canonical = self._single_statement(statement)
                self._check_reads_only(canonical)
                return self._raw(canonical, "JSONCompact")
            except SqlError:
                # A statement that failed half-way (a result limit, a timeout) can leave the rest of its
                # result in the chDB handle, where the next statement would read it: start afresh.
                self.client.close()
                self.client = self._connect()
                raise

    def query(self, statement: str) -> SqlResult:
        return SqlResult.from_json_compact(self.run(statement))

    def _single_statement(self, statement: str) -> str:
        """The engine's own one-line rendering of the statement; it refuses two statements or bad syntax."""
        if not statement.strip():
            raise SqlError("empty statement")
        rendered = self._raw("SELECT formatQuerySingleLine({statement:String})", "TabSeparatedRaw", statement)
        return rendered.decode().rstrip("\n")

    def _check_reads_only(self, canonical: str) -> None:
        lines = self._raw(f"EXPLAIN AST {canonical}", "TabSeparatedRaw").decode().splitlines()
        kind = lines[0].split()[0] if lines else ""
        if not kind.startswith(READING_STATEMENTS):
            raise SqlError(f"only statements that read are allowed here (SELECT, SHOW, DESCRIBE, EXPLAIN), not {kind}")
        for line in lines:
            node = line.split()
            if len(node) >= 2 and node[0] == "Function" and node[1].lower() in FUNCTIONS_THAT_REACH_OUTSIDE:
                raise SqlError(f"the {node[1]}() function reads files of the server and is not allowed here")
        if " INTO OUTFILE " in f" {canonical} ":
            raise SqlError("INTO OUTFILE writes a file and is not allowed here")

    def _raw(self, sql: str, fmt: str, statement: str | None = None) -> bytes:
        parameters = {"statement": statement} if statement is not None else None
        try:
            return bytes(self.client.raw_query(sql, parameters=parameters, fmt=fmt))
        except Exception as exc:
            raise SqlError(str(exc).strip()) from None

    def close(self) -> None:
        self.client.close()
