"""User SQL: read-only by ClickHouse's own rules, one statement at a time, bounded in time, size and memory.

``emostream sql``, the worker's web endpoint and the review service run what a person typed, so the
statement is untrusted input. What is enforced, and why:

- a client of its own (its own chDB handle, or its own HTTP requests), never the scoring thread's, whose
  session runs with ``readonly = 1`` (no writes, no DDL, no ``SET``/``SETTINGS``) and with limits set
  before ``readonly`` locks them: ``max_execution_time``, ``max_result_rows``/``max_result_bytes`` and
  ``max_memory_usage`` (``sql_max_memory``). The memory limit matters most in the embedded mode, where
  the engine is inside the worker's process and has no limit of its own (``max_memory_usage`` is 0): a
  query over it fails with ClickHouse's ``MEMORY_LIMIT_EXCEEDED`` instead of taking the worker down. Over
  HTTP the limits travel with each request; for a user whose server profile is read-only (the one in
  ``deploy/clickhouse/access/``) the client may not set them, and the profile's own limits rule;
- the engine's parser (``formatQuerySingleLine``) accepts exactly one statement, and what runs is its
  rendering of it;
- the engine's parse of that rendering (``EXPLAIN AST``, read as a tree, every node checked, so the rules
  hold inside subqueries, CTEs, JOINs, ``IN (...)``, function arguments and the query an ``EXPLAIN`` of
  any kind explains) must show:

  - a statement that only reads: SELECT, SHOW, DESCRIBE, EXISTS, or EXPLAIN of one of those. ``KILL``,
    ``SYSTEM``, ``USE``, ``EXPLAIN TABLE OVERRIDE`` and the like are refused even where ``readonly``
    would allow them;
  - only kinds of node that show all their parts (:data:`EXPRESSION_NODES`), so that nothing escapes the
    rules below: ``APPLY``, whose function ``EXPLAIN AST`` does not show, is refused, and so is any kind a
    later engine adds. ``SHOW`` hides its ``WHERE``/``LIMIT`` the same way, so a SHOW may have neither a
    ``WHERE`` nor a parenthesis (the one rule on text: the engine's rendering, its literals taken out);
  - no table function other than the few of :data:`ALLOWED_TABLE_FUNCTIONS`, which make rows in memory
    and cannot reach a file, a URL or another server. ``readonly`` alone is not enough: it does not
    cover ``DESCRIBE`` or ``EXPLAIN SYNTAX`` (``DESCRIBE TABLE url(...)`` makes the engine send the
    request, ``DESCRIBE TABLE s3(...)`` can hang past the statement timeout), and it allows ``cluster``,
    ``merge``, ``input``... An allow-list refuses by default what a newer engine adds; a name that is
    only a table function (``url``, ``s3``, ``remote``, ``mysql``...) is refused wherever it appears, and
    one that is also an ordinary function (``format``) where it is used as a table;
  - none of :data:`FUNCTIONS_THAT_REACH_OUTSIDE`: ``file()`` reads any file the process can read (chDB
    has no users, so ``readonly`` does not stop it), and the functions that look a table up by a name in
    a string;
  - no ``INTO OUTFILE``, which writes a file;
  - table names that are plain identifiers or tables of the catalog, and no identifier with a ``/``:
    chDB's default database is an overlay that looks any other name up as a file relative to the
    working directory (``SELECT * FROM `/etc/passwd```): ``readonly`` stops the read, but ``EXISTS`` and
    the errors would tell whether the file exists. In the embedded mode ``EXISTS`` and ``DESCRIBE TABLE``
    answer only for tables of the catalog;
  - a tree that adds up (one root, each node's ``(children N)``): a name with a line break prints as
    lines of its own, and those can then only hang below the leaf that printed them, never hide or move a
    real node; where they would, the statement is refused.

What is left to ``readonly`` and the limits: plain names that are neither tables nor CTEs still reach the
overlay (their error says whether a file of that name is in the working directory; the file is not read),
and the ordinary functions that only read the engine's own state (``getSetting``, ``system.*`` tables).

In production the query DSN names a ClickHouse user that can only SELECT emostream's tables, with a
read-only settings profile (``deploy/clickhouse/access/``): then the server enforces all of it too.

Results travel as ClickHouse's own ``JSONCompact`` so numbers print as ClickHouse prints them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from emostream.stream.clickhouse.config import SqlLimits
from emostream.stream.clickhouse.dsn import ClickHouseDsn

READING_STATEMENTS = (
    "SelectWithUnionQuery",
    "SelectIntersectExceptQuery",
    "Show",
    "Describe",
    "Exists",
    "Explain",
)

# The table functions user SQL may use, as the engine spells them (compared in lower case: the engine
# matches some names in any case, `VALUES`, `Python`).
# Each makes its rows in memory from its constant arguments: none opens a file, a socket or another table.
# Everything else is refused, including what a later engine adds. Left out on purpose: `null` and `view`
# (harmless, but nothing a plain query or subquery cannot do), `generateRandom` and the `fuzz*` functions
# (no use here; `fuzzJSON` takes named collections), `format` (input formats may read schema files),
# `merge`/`loop`/`viewIfPermitted`/`eval` (read other tables or queries: `eval` runs a query from a string
# this check never sees), `input` (INSERT only), `cluster`/`clusterAllReplicas` (other servers, and
# `readonly` allows them), `dictionary`, `mergeTree*` (other tables' internals), and every function of
# files, URLs, object stores, other databases, processes or Python objects (chDB's `python`/`arrowstream`).
ALLOWED_TABLE_FUNCTIONS: dict[str, str] = {
    "numbers": "consecutive integers, computed",
    "numbers_mt": "the same as numbers, on several threads",
    "zeros": "a column of zeros, computed (readonly refuses it in chDB 26.9 anyway)",
    "zeros_mt": "the same as zeros, on several threads",
    "generate_series": "an arithmetic series, computed",
    "generateSeries": "the other spelling of generate_series",
    "primes": "prime numbers, computed",
    "values": "the rows written in the statement itself",
    "SQLStandardValues": "what the parser makes of (VALUES (...), ...) in FROM: rows written in the statement",
}
ALLOWED_LOWER = frozenset(name.lower() for name in ALLOWED_TABLE_FUNCTIONS)

# Ordinary functions refused wherever they appear, by lower-case name, and why.
FUNCTIONS_THAT_REACH_OUTSIDE: dict[str, str] = {
    "file": "reads files of the server",
    # These look a table up by a name given in a string, past the table-name rule below (chDB's default
    # database would look the name up as a file); hasColumnInTable also has a form that connects to another
    # server in other ClickHouse versions. emostream has no Join tables, and system.columns answers the rest.
    "hascolumnintable": "looks a table up by a name in a string (on another server, in some versions)",
    "joinget": "looks a table up by a name in a string",
    "joingetornull": "looks a table up by a name in a string",
}

# The kinds of node of EXPLAIN AST that show every part of themselves as children, so that the rules see
# into all of them; a statement with any other kind of node is refused. Not here, on purpose: the APPLY
# transformer (`SELECT * APPLY file FROM ...` calls a function that EXPLAIN AST does not show) and whatever
# kind a later engine adds. The statement kinds (SHOW, DESCRIBE, EXISTS...) are allowed where a statement
# goes; SHOW hides its WHERE and LIMIT, see SHOW_EXPRESSION.
EXPRESSION_NODES = frozenset(
    {
        "SelectWithUnionQuery",
        "SelectIntersectExceptQuery",
        "SelectQuery",
        "ExpressionList",
        "Function",
        "Identifier",
        "Literal",
        "Asterisk",
        "QualifiedAsterisk",
        "ColumnsRegexpMatcher",
        "ColumnsListMatcher",
        "QualifiedColumnsRegexpMatcher",
        "QualifiedColumnsListMatcher",
        "ColumnsTransformerList",
        "ColumnsExceptTransformer",
        "ColumnsReplaceTransformer",
        "ColumnsReplaceTransformer::Replacement",
        "TablesInSelectQuery",
        "TablesInSelectQueryElement",
        "TableExpression",
        "TableIdentifier",
        "TableJoin",
        "ArrayJoin",
        "Subquery",
        "WithElement",
        "OrderByElement",
        "InterpolateElement",
        "SampleRatio",
        "WindowDefinition",
        "WindowListElement",
        "Set",
    }
)
# EXPLAIN AST shows none of a SHOW statement's WHERE, LIKE or LIMIT (`SHOW TABLES WHERE file(...) != ''`
# would read a file), so a SHOW may have no WHERE and no parenthesis: no call, no subquery. This one rule reads
# text: the engine's own one-line rendering, with its string literals and quoted names taken out first.
SHOW_EXPRESSION = re.compile(r"\(|\bWHERE\b")
QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)

# Whose second argument, when it is a bare name, is a table: `x IN emotion_scores`.
IN_FUNCTIONS = frozenset(
    {"in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin", "globalnotnullin"}
)
# The kinds of statement that answer whether a table exists: in chDB's overlay a file would answer too.
EXISTS_STATEMENTS = frozenset({"ExistsTableQuery", "ExistsViewQuery", "ExistsDictionaryQuery"})
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CHILDREN = re.compile(r" \(children (\d+)\)$")
ALIAS = re.compile(r"(.*?)(?: \(alias .*\))?", re.DOTALL)


class SqlError(Exception):
    """A statement ClickHouse refused or could not run; the message is ClickHouse's (or names the rule)."""


class SqlRefused(SqlError):
    """A statement refused by a rule of this module before the engine ran it; the message names the rule."""


class Number(float):
    """A float that prints exactly as ClickHouse printed it: Float32 0.905 stays ``0.905``."""

    text: str

    def __new__(cls, text: str) -> Number:
        """The number ClickHouse wrote as ``text``, keeping the text."""
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


@dataclass
class SqlResult:
    """A statement's result: column names, their ClickHouse types, and the rows (floats as :class:`Number`)."""

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


@dataclass
class AstNode:
    """One line of ClickHouse's ``EXPLAIN AST``: ``<kind> <text> (children N)``, indented one space a level."""

    kind: str
    text: str
    declared: int
    parent: AstNode | None = None
    children: list[AstNode] = field(default_factory=list)

    def walk(self) -> Iterator[AstNode]:
        """This node and every node below it, depth first, in the order ``EXPLAIN AST`` printed them."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def name(self) -> str:
        """The node's name without its alias: a function's, an identifier's, a table's."""
        match = ALIAS.fullmatch(self.text)
        return match.group(1) if match else self.text


def parse_explain_ast(lines: list[str]) -> AstNode:
    """The tree of ``EXPLAIN AST`` output, or :class:`SqlError` where it is not one well-formed tree.

    An identifier or alias may contain a line break, which the engine prints as is: the lines after it
    could look like nodes of their own. With the counts checked, such lines can only hang below the node
    that printed them, a leaf (harmless: nothing of the statement is below it, and they are checked like
    the rest); to hide or move a real node they would have to break a count or add a root, and then the
    statement is refused. ``lines`` are split at ``\\n`` only, as the engine writes them.
    """
    malformed = SqlRefused(
        "the statement's parse could not be checked (an identifier or alias with a line break?) and is not allowed"
    )
    root: AstNode | None = None
    path: list[AstNode] = []
    for line in lines:
        body = line.lstrip(" ")
        depth = len(line) - len(body)
        count = CHILDREN.search(body)
        if count:
            body = body[: count.start()]
        kind, _, text = body.partition(" ")
        if not kind or depth > len(path) or (depth == 0 and root is not None):
            raise malformed
        node = AstNode(kind, text, int(count.group(1)) if count else 0)
        if depth == 0:
            root = node
        else:
            node.parent = path[depth - 1]
            node.parent.children.append(node)
        del path[depth:]
        path.append(node)
    if root is None or any(len(node.children) != node.declared for node in root.walk()):
        raise malformed
    return root


def session_settings(limits: SqlLimits) -> dict[str, Any]:
    """What every user statement runs under; ``readonly`` comes last because it freezes the others."""
    return {
        "max_execution_time": limits.sql_timeout,
        "max_result_rows": limits.sql_max_rows,
        "max_result_bytes": limits.sql_max_bytes,
        "result_overflow_mode": "throw",
        "max_memory_usage": limits.sql_max_memory,  # per statement; the engine's default is no limit
        "output_format_json_quote_64bit_integers": 0,
        "output_format_json_validate_utf8": 1,  # a dead letter's raw bytes must not break the JSON
        "readonly": 1,
    }


class ReadOnlySql:
    """A ClickHouse client for untrusted statements. Blocking: call it from a thread of its own."""

    def __init__(self, dsn: ClickHouseDsn, limits: SqlLimits) -> None:
        self.dsn = dsn.url
        self.embedded = dsn.embedded
        self._limits = session_settings(limits)
        directory = dsn.directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._only_table_functions: frozenset[str] | None = None
        self._statement_catalog: dict[str, bool] = {}
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
        # Over HTTP each request carries the settings. A user whose profile is already read-only (the one in
        # deploy/clickhouse/access/) may not change settings at all: its profile rules instead.
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
            except SqlRefused:
                raise  # nothing ran: the handle is as it was
            except SqlError:
                # A statement that failed half-way (a result limit, a timeout) can leave the rest of its
                # result in the chDB handle, where the next statement would read it: start afresh.
                self.client.close()
                self.client = self._connect()
                raise

    def query(self, statement: str) -> SqlResult:
        """The statement's result as columns, types and rows; :class:`SqlError` as for :meth:`run`."""
        return SqlResult.from_json_compact(self.run(statement))

    def _single_statement(self, statement: str) -> str:
        """The engine's own one-line rendering of the statement; it refuses two statements or bad syntax."""
        if not statement.strip():
            raise SqlRefused("empty statement")
        rendered = self._raw("SELECT formatQuerySingleLine({statement:String})", "TabSeparatedRaw", statement)
        return rendered.decode().rstrip("\n")

    def _check_reads_only(self, canonical: str) -> None:
        """Refuse, naming the rule, what the module docstring lists; from the engine's own parse."""
        if " INTO OUTFILE " in f" {canonical} ":
            raise SqlRefused("INTO OUTFILE writes a file and is not allowed here")
        self._statement_catalog = {}
        explained = self._raw(f"EXPLAIN AST {canonical}", "TabSeparatedRaw").decode()
        root = parse_explain_ast(explained.removesuffix("\n").split("\n"))
        if not root.kind.startswith(READING_STATEMENTS):
            raise SqlRefused(
                f"only statements that read are allowed here (SELECT, SHOW, DESCRIBE, EXPLAIN), not {root.kind}"
            )
        for node in root.walk():
            self._check_kind(node, canonical)
            if node.kind == "Explain":
                self._check_explained(node)
            elif node.kind == "Function":
                self._check_function(node)
            elif node.kind in ("TableIdentifier", "Identifier"):
                self._check_name(node)
            elif self.embedded and node.kind in EXISTS_STATEMENTS:
                self._check_exists(node)

    @staticmethod
    def _check_kind(node: AstNode, canonical: str) -> None:
        """A node whose parts the check sees, or a statement where a statement goes (SHOW: see SHOW_EXPRESSION)."""
        if node.kind in EXPRESSION_NODES or node.kind == "Explain":
            return
        if node.kind.startswith(READING_STATEMENTS) and (node.parent is None or node.parent.kind == "Explain"):
            if node.kind.startswith("Show") and SHOW_EXPRESSION.search(QUOTED.sub("''", canonical)):
                raise SqlRefused(
                    "SHOW takes no WHERE and no expression here (its parse does not show them to this check): "
                    "SELECT from system.tables, system.columns... instead"
                )
            return
        raise SqlRefused(
            f"the statement uses {node.kind}, whose parts this check cannot see into (APPLY hides the function it "
            "calls, for one), and is not allowed here"
        )

    @staticmethod
    def _check_explained(node: AstNode) -> None:
        """EXPLAIN of any kind, of one statement that reads (its tree is checked like any other)."""
        explained = [child for child in node.children if child.kind not in ("Set", "Identifier", "Literal")]
        if len(explained) != 1 or not explained[0].kind.startswith(READING_STATEMENTS):
            what = explained[0].kind if explained else "nothing"
            raise SqlRefused(f"{node.text} is allowed here only of a statement that reads, not of {what}")

    def _check_function(self, node: AstNode) -> None:
        name = node.name.split(" ")[0]
        lowered = name.lower()
        if lowered in FUNCTIONS_THAT_REACH_OUTSIDE:
            raise SqlRefused(f"the {name}() function {FUNCTIONS_THAT_REACH_OUTSIDE[lowered]} and is not allowed here")
        used_as_table = node.parent is not None and node.parent.kind == "TableExpression"
        if lowered not in ALLOWED_LOWER and (used_as_table or lowered in self._table_functions_only()):
            raise SqlRefused(
                f"the table function {name}() is not allowed here: table functions may reach files, URLs or other "
                f"servers, and user SQL may use only {', '.join(ALLOWED_TABLE_FUNCTIONS)}"
            )
        if lowered in IN_FUNCTIONS and node.children and len(node.children[0].children) == 2:
            table = node.children[0].children[1]
            if table.kind == "Identifier":
                self._check_table_name(table.name)

    def _check_name(self, node: AstNode) -> None:
        name = node.name
        if "/" in name:
            raise SqlRefused(
                f"`{name}` looks like a file path, which the embedded engine would read as a table; not allowed here"
            )
        if node.kind != "TableIdentifier":
            return
        self._check_table_name(name)
        expression = node.parent
        if self.embedded and expression and expression.parent and expression.parent.kind.startswith("Describe"):
            self._check_catalog_table("DESCRIBE", name)

    def _check_table_name(self, name: str) -> None:
        """A plain identifier (a table, a CTE, or unknown to the engine) or a table of the catalog."""
        if PLAIN_NAME.fullmatch(name) or self._in_catalog(name):
            return
        raise SqlRefused(
            f"`{name}` is not a table here: a table name must be a plain identifier or a table of the catalog "
            "(the embedded engine looks other names up as files)"
        )

    def _check_exists(self, node: AstNode) -> None:
        # The node reads `<kind> <database> <table>`, the database empty where the statement names none.
        database, _, table = node.text.partition(" ")
        self._check_catalog_table("EXISTS", f"{database}.{table}" if database else table)

    def _check_catalog_table(self, statement: str, name: str) -> None:
        if not self._in_catalog(name):
            raise SqlRefused(
                f"{statement} answers here only for tables of the catalog, and `{name}` is not one (the embedded "
                "engine would look for a file of that name)"
            )

    def _in_catalog(self, name: str) -> bool:
        """Whether ``name`` is a table of the catalog: ``database.table``, or a table of the current database.

        Asked of the engine for each name once per statement (tables come and go while the worker runs); one
        row each way, so the result limits of the session never cut it short.
        """
        if name not in self._statement_catalog:
            body = self._raw(
                "SELECT count() > 0 FROM system.tables WHERE concat(database, '.', name) = {statement:String} "
                "OR (database = currentDatabase() AND name = {statement:String})",
                "TabSeparatedRaw",
                name,
            )
            self._statement_catalog[name] = body.strip() == b"1"
        return self._statement_catalog[name]

    def _table_functions_only(self) -> frozenset[str]:
        """The engine's table functions whose names are no ordinary function's, by lower-case name."""
        if self._only_table_functions is None:
            body = self._raw(
                "SELECT arrayStringConcat(groupUniqArray(lower(name)), ' ') FROM system.table_functions "
                "WHERE lower(name) NOT IN (SELECT lower(name) FROM system.functions)",
                "TabSeparatedRaw",
            )
            self._only_table_functions = frozenset(body.decode().split())
        return self._only_table_functions

    def _raw(self, sql: str, fmt: str, statement: str | None = None) -> bytes:
        parameters = {"statement": statement} if statement is not None else None
        try:
            return bytes(self.client.raw_query(sql, parameters=parameters, fmt=fmt))
        except Exception as exc:
            raise SqlError(str(exc).strip()) from None

    def close(self) -> None:
        """Close the client (its chDB handle, or its HTTP connections)."""
        self.client.close()
