"""User SQL that tries to reach outside the engine: table functions, files, the network, memory.

Every hostile statement runs through :class:`stream.clickhouse.sql.ReadOnlySql` on the real embedded engine, on a
thread with a deadline (one that hangs fails its test instead of hanging the run), while a loopback
listener records any connection the engine makes: a refusal must name the rule, and nothing may connect.
The controls at the end show that the listener does see the engine connect when the guard is bypassed,
so its silence means something.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.clickhouse.sql import (
    ALLOWED_TABLE_FUNCTIONS,
    FUNCTIONS_THAT_REACH_OUTSIDE,
    ReadOnlySql,
    SqlError,
    SqlLimits,
    parse_explain_ast,
    session_settings,
)
from tests.test_sink import scores

pytestmark = pytest.mark.integration

ROWS = 20
DEADLINE = 20.0  # seconds a statement may take here before its test fails as hung
HTTP_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n1\n"


class Listener:
    """A loopback TCP port that records every connection; it answers with a tiny HTTP response and closes."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.2)  # accept() wakes up to notice the stop
        self.port = self.socket.getsockname()[1]
        self.connections: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(1.0)
                try:
                    request = connection.recv(4096)
                except OSError:
                    request = b""
                self.connections.append(request or b"(connected, sent nothing)")
                with contextlib.suppress(OSError):
                    connection.sendall(HTTP_ANSWER)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()


def within(seconds: float, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` on a thread of its own; the test fails (it does not hang) if that takes too long."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call(*args)
        except BaseException as exc:  # re-raised on the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="statement", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds:.0f} s: {args}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClickHouseSink, ReadOnlySql, Settings, Path]]:
    """One embedded engine for the module (chDB serves one data directory per process): a writer with
    ``ROWS`` scores and a reader, as in a running worker."""
    tmp = tmp_path_factory.mktemp("hostile")
    settings = Settings(home=tmp / "home", sql_timeout=5, sql_max_rows=1000)
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    sink.apply_schema()
    sink.write(scores(ROWS))
    reader = ReadOnlySql(settings.query_clickhouse(), settings)
    (tmp / "secret.txt").write_text("secret-line-7f3a\n")
    yield sink, reader, settings, tmp
    reader.close()
    sink.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.close()


@pytest.fixture
def reader(engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path], listener: Listener) -> Iterator[ReadOnlySql]:
    """The module's reader; after each test nothing may have connected to the listener."""
    listener.connections.clear()
    yield engine[1]
    assert listener.connections == [], "the engine connected to the listener"


def refusal(reader: ReadOnlySql, statement: str) -> str:
    """The refusal's message; fails the test when the statement is accepted or runs past the deadline."""
    try:
        result = within(DEADLINE, reader.query, statement)
    except SqlError as exc:
        return str(exc)
    pytest.fail(f"accepted: {statement!r} -> {result.rows[:3]}")


def table_function_rule(name: str) -> str:
    return f"the table function {name}() is not allowed here"


# Table-function expressions that reach the listener; PORT is replaced by its port.
NETWORK_SOURCES = [
    "url('http://127.0.0.1:PORT/x', 'CSV')",
    "url('http://127.0.0.1:PORT/x', 'LineAsString')",
    "url('http://127.0.0.1:PORT/x', 'CSV', 'a String')",
    "URL('http://127.0.0.1:PORT/x')",
    "s3('http://127.0.0.1:PORT/bucket/x.csv')",
    "s3('http://127.0.0.1:PORT/bucket/x.csv', 'CSV', 'a String')",
    "s3Cluster('default', 'http://127.0.0.1:PORT/bucket/x.csv')",
    "urlCluster('default', 'http://127.0.0.1:PORT/x')",
    "remote('127.0.0.1:PORT', system.one)",
    "remoteSecure('127.0.0.1:PORT', system.one)",
    "cluster('default', system.one)",
    "clusterAllReplicas('default', system.one)",
    "mysql('127.0.0.1:PORT', 'db', 't', 'user', 'password')",
    "postgresql('127.0.0.1:PORT', 'db', 't', 'user', 'password')",
    "mongodb('127.0.0.1:PORT', 'db', 'c', 'user', 'password', 'x String')",
    "redis('127.0.0.1:PORT', 'k', 'k String, v String')",
    "azureBlobStorage('http://127.0.0.1:PORT/account', 'container', 'x.csv')",
    "gcs('http://127.0.0.1:PORT/bucket/x.csv')",
    "hdfs('hdfs://127.0.0.1:PORT/x.csv', 'CSV', 'a String')",
    "deltaLake('http://127.0.0.1:PORT/bucket/table/')",
    "hudi('http://127.0.0.1:PORT/bucket/table/')",
    "iceberg('http://127.0.0.1:PORT/bucket/table/')",
    "icebergS3('http://127.0.0.1:PORT/bucket/table/')",
    "jdbc('jdbc:mysql://127.0.0.1:PORT/db', 't')",
    "odbc('DSN=x;Server=127.0.0.1;Port=PORT', 'db', 't')",
    "loop(url('http://127.0.0.1:PORT/x', 'LineAsString'))",
    "view(SELECT * FROM url('http://127.0.0.1:PORT/x', 'LineAsString'))",
    "viewIfPermitted(SELECT 1 ELSE url('http://127.0.0.1:PORT/x', 'LineAsString'))",
    "merge(REGEXP('.*'), '.*')",
]

# Every way a table expression can sit in a statement; {t} is the table function.
FORMS = [
    "SELECT * FROM {t}",
    "SELECT * FROM {t} AS x LIMIT 1",
    "DESCRIBE TABLE {t}",
    "DESC {t}",
    "DESCRIBE (SELECT * FROM {t})",
    "EXPLAIN SELECT * FROM {t}",
    "EXPLAIN AST SELECT * FROM {t}",
    "EXPLAIN SYNTAX SELECT * FROM {t}",
    "EXPLAIN QUERY TREE SELECT * FROM {t}",
    "EXPLAIN PLAN actions = 1 SELECT * FROM {t}",
    "EXPLAIN PIPELINE SELECT * FROM {t}",
    "EXPLAIN ESTIMATE SELECT * FROM {t}",
    "EXPLAIN AST EXPLAIN SYNTAX SELECT * FROM {t}",
    "SELECT * FROM (SELECT * FROM {t})",
    "WITH s AS (SELECT * FROM {t}) SELECT * FROM s",
    "WITH (SELECT count() FROM {t}) AS n SELECT n",
    "SELECT (SELECT count() FROM {t})",
    "SELECT * FROM numbers((SELECT count() FROM {t}))",
    "SELECT * FROM system.one AS a JOIN {t} AS b ON 1 = 1",
    "SELECT * FROM system.one AS a LEFT JOIN (SELECT * FROM {t}) AS b ON 1 = 1",
    "SELECT * FROM system.one, {t}",
    "SELECT 1 WHERE 1 IN (SELECT 1 FROM {t})",
    "SELECT 1 WHERE 1 GLOBAL NOT IN (SELECT 1 FROM {t})",
    "SELECT 1 IN {t}",
    "SELECT 1 UNION ALL SELECT 1 FROM {t}",
    "SELECT 1 INTERSECT SELECT 1 FROM {t}",
    "SELECT 1 EXCEPT SELECT 1 FROM {t}",
    "EXPLAIN ESTIMATE SELECT * FROM system.one WHERE dummy IN (SELECT 1 FROM {t})",
]
# SHOW and EXISTS take no table function at all: the parser refuses them, and nothing connects either.
SYNTAX_FORMS = ["SHOW CREATE TABLE {t}", "SHOW COLUMNS FROM {t}", "EXISTS TABLE {t}", "SHOW TABLES FROM {t}"]
HEADLINE_SOURCES = NETWORK_SOURCES[:7]  # url and s3 in every form; the rest in a few


def network_cases() -> list[tuple[str, str]]:
    cases = [(form, source) for source in HEADLINE_SOURCES for form in FORMS + SYNTAX_FORMS]
    few = [FORMS[0], FORMS[2], FORMS[7], FORMS[14], FORMS[18], FORMS[21]]
    return cases + [(form, source) for source in NETWORK_SOURCES[len(HEADLINE_SOURCES) :] for form in few]


@pytest.mark.parametrize(("form", "source"), network_cases())
def test_table_functions_that_reach_the_network_are_refused_and_never_connect(
    reader: ReadOnlySql, listener: Listener, form: str, source: str
) -> None:
    statement = form.format(t=source.replace("PORT", str(listener.port)))
    message = refusal(reader, statement)
    if form in SYNTAX_FORMS:
        assert "Syntax error" in message
    else:
        assert table_function_rule(source.split("(")[0]) in message
    # `reader` asserts, once the statement is over, that nothing connected


FILE_SOURCES = [
    ("file('{secret}', 'LineAsString')", "the file() function reads files of the server"),
    ("FILE('{secret}')", "the FILE() function reads files of the server"),
    ("fileCluster('default', '{secret}')", table_function_rule("fileCluster")),
    ("sqlite('{secret}', 't')", table_function_rule("sqlite")),
    ("icebergLocal('{tmp}')", table_function_rule("icebergLocal")),
    ("deltaLakeLocal('{tmp}')", table_function_rule("deltaLakeLocal")),
    ("filesystem('{tmp}')", table_function_rule("filesystem")),
    ("executable('cat {secret}', 'TSV', 'a String')", table_function_rule("executable")),
    ("python(secret)", table_function_rule("python")),
    ("Python(secret)", table_function_rule("Python")),
    ("arrowstream('x')", table_function_rule("arrowstream")),
    ("input('a String')", table_function_rule("input")),
    ("format(CSV, '1,2')", table_function_rule("format")),
    ("format(LineAsString, 'a')", table_function_rule("format")),
    ("dictionary('d')", table_function_rule("dictionary")),
    ("eval('SELECT * FROM url(''http://127.0.0.1:9/x'', ''CSV'')')", table_function_rule("eval")),
    ("mergeTreeIndex(default, emotion_scores)", table_function_rule("mergeTreeIndex")),
    ("null('x Int8')", table_function_rule("null")),
    ("generateRandom('a Int8')", table_function_rule("generateRandom")),
    ("fuzzQuery('SELECT 1')", table_function_rule("fuzzQuery")),
]


@pytest.mark.parametrize("form", [FORMS[0], FORMS[2], FORMS[7], FORMS[11], FORMS[14], FORMS[18], FORMS[21]])
@pytest.mark.parametrize(("source", "rule"), FILE_SOURCES)
def test_table_functions_of_files_processes_and_objects_are_refused(
    engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path], reader: ReadOnlySql, form: str, source: str, rule: str
) -> None:
    tmp = engine[3]
    statement = form.format(t=source.format(secret=tmp / "secret.txt", tmp=tmp))
    assert rule in refusal(reader, statement)


# The parser wants a query inside these; any other table function is tried with no arguments at all.
QUERY_ARGUMENTS = {"view": "SELECT 1", "viewIfPermitted": "SELECT 1 ELSE numbers(1)"}


def engine_table_functions(reader: ReadOnlySql) -> list[str]:
    body = reader._raw("SELECT arrayStringConcat(groupArray(name), ' ') FROM system.table_functions", "TabSeparatedRaw")
    return sorted(body.decode().split())


def test_every_table_function_of_the_engine_not_on_the_allow_list_is_refused(reader: ReadOnlySql) -> None:
    """From ``system.table_functions``: a table function a new engine adds is refused by default."""
    names = engine_table_functions(reader)
    allowed = {name.lower() for name in ALLOWED_TABLE_FUNCTIONS}
    assert allowed <= {name.lower() for name in names}, "an allowed name that the engine does not know"
    refused = [name for name in names if name.lower() not in allowed]
    assert len(refused) > 60 and {"url", "s3", "remote", "cluster", "merge", "eval", "python"} <= set(refused)
    # Where no table can be, a name that is also an ordinary function (format) is that function.
    ordinary = reader._raw("SELECT arrayStringConcat(groupArray(lower(name)), ' ') FROM system.functions", "TSVRaw")
    ordinary_names = set(ordinary.decode().split())
    forms = [FORMS[0], FORMS[2], FORMS[7], FORMS[10], FORMS[14], FORMS[18], FORMS[21]]
    wrong = []
    for name in refused:
        bare = name.lower() not in ordinary_names and name not in QUERY_ARGUMENTS
        for form in forms + (["SELECT 1 IN {t}"] if bare else []):
            statement = form.format(t=f"`{name}`({QUERY_ARGUMENTS.get(name, '')})")
            message = refusal(reader, statement)
            if not (table_function_rule(name) in message or f"the {name}() function" in message):
                wrong.append((statement, message))
    assert wrong == [], "\n".join(map(str, wrong))


def test_the_allowed_table_functions_run(reader: ReadOnlySql) -> None:
    assert reader.query("SELECT count() FROM numbers(10)").rows == [[10]]
    assert reader.query("SELECT sum(number) FROM numbers_mt(10)").rows == [[45]]
    assert reader.query("SELECT * FROM generate_series(1, 3)").rows == [[1], [2], [3]]
    assert reader.query("SELECT count() FROM generateSeries(1, 5)").rows == [[5]]
    assert reader.query("SELECT * FROM primes(3)").rows == [[2], [3], [5]]
    assert reader.query("SELECT * FROM values('x Int8', 1, 2)").rows == [[1], [2]]
    assert reader.query("SELECT * FROM VALUES('x Int8', 3)").rows == [[3]]
    assert reader.query("SELECT * FROM (VALUES (1), (2))").rows == [[1], [2]]  # SQLStandardValues
    assert reader.query("SELECT * FROM system.one AS a JOIN numbers(1) AS b ON 1 = 1").rows == [[0, 0]]
    assert reader.query("DESCRIBE TABLE numbers(3)").rows[0][:2] == ["number", "UInt64"]
    assert reader.query("EXPLAIN SYNTAX SELECT * FROM numbers(3)").rows
    # zeros() is allowed by the guard (it makes zeros in memory), but chDB's readonly refuses it itself
    assert "table function" not in refusal(reader, "SELECT * FROM zeros(3)")
    # format() the ordinary function (not the table function of the same name) is fine
    assert reader.query("SELECT format('{}-{}', 1, 2)").rows == [["1-2"]]


@pytest.mark.parametrize(
    ("statement", "rule"),
    [
        ("SELECT file('{secret}')", "the file() function reads files"),
        ("SELECT upper(File('{secret}')) AS x", "the File() function reads files"),
        ("SELECT * FROM system.one WHERE file('{secret}') != ''", "the file() function reads files"),
        ("EXPLAIN SYNTAX SELECT file('{secret}')", "the file() function reads files"),
        ("SELECT hasColumnInTable('default', 'emotion_scores', 'tweet_id')", "the hasColumnInTable() function"),
        ("SELECT hasColumnInTable('127.0.0.1:PORT', 'default', 'default', 't', 'c')", "the hasColumnInTable()"),
        ("SELECT joinGet('{secret}', 'x', 1)", "the joinGet() function looks a table up"),
        ("SELECT joinGetOrNull('t', 'x', 1)", "the joinGetOrNull() function looks a table up"),
        ("SELECT * FROM `{secret}`", "looks like a file path"),
        ("SELECT * FROM '{secret}'", "looks like a file path"),
        ("DESCRIBE TABLE `{secret}`", "looks like a file path"),
        ("SELECT * FROM system.one JOIN `{secret}` ON 1 = 1", "looks like a file path"),
        ("SELECT 1 IN `{secret}`", "is not a table here"),
        ("SELECT 1 IN default.`secret.txt`", "is not a table here"),
        ("SELECT * FROM `secret.txt`", "`secret.txt` is not a table here"),
        ("SELECT * FROM default.`secret.txt`", "`default.secret.txt` is not a table here"),
        ("EXISTS TABLE `{secret}`", "EXISTS answers here only for tables of the catalog"),
        ("EXISTS `/etc/passwd`", "EXISTS answers here only for tables of the catalog"),
        ("EXISTS TABLE no_such_table", "EXISTS answers here only for tables of the catalog"),
        ("EXISTS DICTIONARY `{secret}`", "EXISTS answers here only for tables of the catalog"),
        ("DESCRIBE no_such_table", "DESCRIBE answers here only for tables of the catalog"),
        ("SHOW CREATE TABLE `{secret}`", "looks like a file path"),
        ("SELECT * FROM emotion_scores INTO OUTFILE '{tmp}/out.csv'", "INTO OUTFILE writes a file"),
        ("SELECT 1 INTO OUTFILE '{tmp}/out.csv' TRUNCATE", "INTO OUTFILE writes a file"),
        ("EXPLAIN SYNTAX SELECT 1 INTO OUTFILE '{tmp}/out.csv'", "INTO OUTFILE writes a file"),
        ("WITH 1 AS x SELECT x INTO OUTFILE '{tmp}/out.csv' AND STDOUT", "INTO OUTFILE writes a file"),
        ("EXPLAIN TABLE OVERRIDE mysql('127.0.0.1:PORT', 'db', 't', 'u', 'p') PARTITION BY x", "only of a statement"),
        ("EXPLAIN AST DROP TABLE emotion_scores", "EXPLAIN AST is allowed here only of a statement that reads"),
        ("EXPLAIN SYNTAX INSERT INTO FUNCTION url('http://127.0.0.1:PORT/x') SELECT 1", "only of a statement"),
        ("SELECT * APPLY file FROM (SELECT '{secret}')", "uses ColumnsApplyTransformer"),
        ("SELECT * APPLY (x -> file(x)) FROM (SELECT '{secret}')", "uses ColumnsApplyTransformer"),
        ("SELECT COLUMNS('c') APPLY file FROM (SELECT '{secret}' AS c)", "uses ColumnsApplyTransformer"),
        ("EXPLAIN SYNTAX SELECT * APPLY file FROM (SELECT '{secret}')", "uses ColumnsApplyTransformer"),
        ("SHOW TABLES WHERE startsWith(file('{secret}'), 'secret')", "SHOW takes no WHERE"),
        ("SHOW TABLES WHERE name IN (SELECT 'x' FROM url('http://127.0.0.1:PORT/x', 'CSV'))", "SHOW takes no WHERE"),
        ("SHOW TABLES WHERE name IN `{secret}`", "SHOW takes no WHERE"),
        ("SHOW COLUMNS FROM emotion_scores WHERE 1", "SHOW takes no WHERE"),
        ("SHOW DATABASES LIMIT (SELECT count() FROM url('http://127.0.0.1:PORT/x', 'CSV'))", "SHOW takes no WHERE"),
        ("SHOW INDEX FROM emotion_scores WHERE length(file('{secret}')) > 0", "SHOW takes no WHERE"),
        ("EXPLAIN AST SHOW TABLES WHERE file('{secret}') != ''", "SHOW takes no WHERE"),
        ("SELECT quantile(length(file('{secret}')) / 100)(number) FROM numbers(3)", "the file() function"),
        ("SELECT number FROM numbers(3) ORDER BY number WITH FILL STEP length(file('{secret}'))", "the file() func"),
        ("SELECT sum(number) OVER (PARTITION BY file('{secret}')) FROM numbers(3)", "the file() function"),
        ("SELECT * REPLACE (file('{secret}') AS number) FROM numbers(1)", "the file() function"),
        ("SELECT 1 AS `a\n    Function url`", "could not be checked"),
        ("SELECT * FROM numbers(1) AS `n\nTableExpression (children 1)`", "could not be checked"),
    ],
)
def test_files_identifiers_and_explain_kinds_that_reach_outside_are_refused(
    engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path],
    reader: ReadOnlySql,
    listener: Listener,
    statement: str,
    rule: str,
) -> None:
    tmp = engine[3]
    text = statement.replace("PORT", str(listener.port)).format(secret=tmp / "secret.txt", tmp=tmp)
    assert rule in refusal(reader, text)
    assert not (tmp / "out.csv").exists()


def test_what_reads_only_the_catalog_still_works(
    engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path], reader: ReadOnlySql
) -> None:
    assert reader.query("EXISTS TABLE emotion_scores").rows == [[1]]
    assert reader.query("EXISTS emotion_scores").rows == [[1]]
    assert reader.query("EXISTS TABLE default.emotion_scores").rows == [[1]]
    assert reader.query("EXISTS TABLE system.one").rows == [[1]]
    assert reader.query("DESCRIBE TABLE default.emotion_scores").rows[0][:2] == ["tweet_id", "String"]
    assert reader.query("SELECT count() FROM default.emotion_scores").rows == [[ROWS]]
    assert reader.query("SELECT count() FROM emotion_scores AS s JOIN emotion_scores AS t USING tweet_id").rows
    assert reader.query("SELECT 0 IN system.one").rows == [[1]]  # a table on the right of IN
    assert reader.query("WITH t AS (SELECT 1 AS x) SELECT * FROM t").rows == [[1]]
    assert reader.query("SELECT 1 AS `a/b`").rows == [[1]]  # only an identifier that is a name is checked
    assert reader.query("SELECT count() > 0 FROM INFORMATION_SCHEMA.TABLES").rows == [[1]]
    assert reader.query("SHOW CREATE TABLE emotion_scores").rows
    assert reader.query("SHOW COLUMNS FROM emotion_scores").rows
    assert reader.query("EXPLAIN PLAN SELECT count() FROM emotion_scores").rows
    assert reader.query("EXPLAIN PIPELINE SELECT count() FROM emotion_scores").rows
    assert reader.query("EXPLAIN ESTIMATE SELECT count() FROM emotion_scores").rows is not None
    assert reader.query("EXPLAIN QUERY TREE SELECT 1").rows
    assert reader.query("SELECT 'SELECT * FROM url(''http://x'')' AS text").rows  # a string is not a call
    assert ["emotion_scores"] in reader.query("SHOW TABLES LIKE 'emotion%'").rows
    assert reader.query("SHOW TABLES LIKE 'a\\' WHERE (1'").rows == []  # WHERE and ( inside a literal
    assert reader.query("SHOW TABLES FROM system LIKE 'one' LIMIT 3").rows == [["one"]]
    assert reader.query("SHOW SETTING max_threads").rows == [["1"]]
    assert reader.query("SELECT 1 AS `a\u2028b`").rows == [[1]]  # a line break only to Python is no break
    assert reader.query("SELECT * EXCEPT (b) REPLACE (number + 1 AS number) FROM (SELECT 1 AS number, 2 AS b)").rows


def test_the_memory_limit_is_the_readers_and_the_engine_enforces_it(
    engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path], reader: ReadOnlySql
) -> None:
    sink, _, settings, _ = engine
    assert reader.query("SELECT getSetting('max_memory_usage')").rows == [[settings.sql_max_memory]]
    small = ReadOnlySql(settings.query_clickhouse(), SqlLimits(sql_max_memory=50_000_000))
    try:
        assert small.query("SELECT getSetting('max_memory_usage')").rows == [[50_000_000]]
        with pytest.raises(SqlError, match=re.escape("MEMORY_LIMIT_EXCEEDED")) as refused:
            within(DEADLINE, small.query, "SELECT length(groupArray(number)) FROM numbers(20000000)")
        assert "memory limit exceeded" in str(refused.value).lower()
        assert small.query("SELECT count() FROM emotion_scores").rows == [[ROWS]]  # the next statement works
        assert small.query("SELECT length(groupArray(number)) FROM numbers(100000)").rows == [[100000]]
    finally:
        small.close()
    # the limit is the reader's session's: the writer's handle on the same engine keeps its own
    assert sink.query("SELECT getSetting('max_memory_usage')")[1] != [(50_000_000,)]


def test_the_memory_limit_travels_with_http_requests_unless_the_profile_is_read_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over HTTP the client sets the limits per request; a read-only profile's own limits rule instead."""
    import clickhouse_connect

    class Setting:
        def __init__(self, value: str) -> None:
            self.value = value

    class FakeClient:
        def __init__(self, readonly: str | None) -> None:
            self.server_settings = {} if readonly is None else {"readonly": Setting(readonly)}
            self.sent: dict[str, Any] = {}

        def set_client_setting(self, name: str, value: Any) -> None:
            self.sent[name] = value

    for readonly, expected in ((None, True), ("0", True), ("1", False)):
        fake = FakeClient(readonly)
        monkeypatch.setattr(clickhouse_connect, "get_client", lambda dsn, fake=fake: fake)
        settings = Settings(clickhouse_query_dsn="http://reader:pw@127.0.0.1:9/emostream", sql_max_memory=12345)
        ReadOnlySql(settings.query_clickhouse(), settings)
        if expected:
            assert fake.sent == session_settings(settings) and fake.sent["max_memory_usage"] == 12345
        else:
            assert fake.sent == {}


# Names with line breaks print as lines of their own in EXPLAIN AST. Lines that would hide a real node or move
# it fail the tree check; lines that only hang below the leaf that printed them are harmless (nothing real is
# below a leaf), and every real node is still checked. {url} is a table function that reaches the listener.
HIDING_ATTEMPTS = [
    "SELECT * FROM {url} AS `x\n      Identifier y`",
    "SELECT * FROM {url} AS `x (children 2)\n       Identifier y`",
    "SELECT * FROM {url} AS `x (children 2)\n       Identifier y (children 1)\n        Literal z`",
    "SELECT * FROM {url} AS `x\n     TableIdentifier emotion_scores`",
    "SELECT * FROM {url} AS `x\n    Subquery (children 1)\n     Function url`",
    "SELECT `a\n     TableExpression (children 1)` FROM system.one AS a JOIN {url} AS b ON 1 = 1",
    "SELECT `a (children 1)\n    Subquery` FROM system.one AS a JOIN {url} AS b ON 1 = 1",
    "WITH `w\n  Function numbers` AS (SELECT 1) SELECT * FROM {url}",
    "DESCRIBE TABLE {url} AS `x\nDescribeQuery`",
]


@pytest.mark.parametrize("attempt", HIDING_ATTEMPTS)
def test_line_breaks_in_names_cannot_hide_a_table_function(
    reader: ReadOnlySql, listener: Listener, attempt: str
) -> None:
    url = f"url('http://127.0.0.1:{listener.port}/x', 'CSV')"
    message = refusal(reader, attempt.format(url=url))
    assert table_function_rule("url") in message or "could not be checked" in message


def test_a_line_break_below_a_leaf_is_harmless(reader: ReadOnlySql) -> None:
    # The alias prints as "Literal UInt64_1 (alias a (children 1)" and a child line "Function url)": a node
    # that is no function of the statement. What runs is SELECT 1.
    assert reader.query("SELECT 1 AS `a (children 1)\n     Function url`").rows == [[1]]


def test_the_data_is_intact_after_every_attempt(engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path]) -> None:
    sink, reader, _, tmp = engine
    assert sink.query("SELECT count() FROM emotion_scores")[1] == [(ROWS,)]
    assert reader.query("SELECT count() FROM emotion_scores").rows == [[ROWS]]
    assert not (tmp / "out.csv").exists()


# The controls: without the guard the same engine does reach out, so the tests above prove something.


def test_control_the_listener_sees_the_engine_connect_when_the_guard_is_bypassed(
    engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path], listener: Listener
) -> None:
    sink, reader, _, _ = engine
    listener.connections.clear()
    url = f"http://127.0.0.1:{listener.port}/x"
    # readonly alone does not cover DESCRIBE: the reader's own session, past the guard, sends the request
    within(DEADLINE, reader._raw, f"DESCRIBE TABLE url('{url}', 'CSV')", "TabSeparatedRaw")
    assert listener.connections and listener.connections[0].startswith(b"GET /x HTTP/1.1")
    seen = len(listener.connections)
    assert table_function_rule("url") in refusal(reader, f"DESCRIBE TABLE url('{url}', 'CSV')")
    assert len(listener.connections) == seen
    # and the writer's trusted handle reads the URL outright
    assert within(DEADLINE, sink.query, f"SELECT * FROM url('{url}', 'LineAsString')")[1] == [("1",)]
    assert len(listener.connections) > seen
    listener.connections.clear()


def test_control_the_engine_answers_exists_for_any_file_when_the_guard_is_bypassed(
    engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path],
) -> None:
    _, reader, _, tmp = engine
    secret = tmp / "secret.txt"
    assert within(DEADLINE, reader._raw, f"EXISTS TABLE `{secret}`", "TabSeparatedRaw").strip() == b"1"
    assert within(DEADLINE, reader._raw, f"EXISTS TABLE `{tmp / 'nothing'}`", "TabSeparatedRaw").strip() == b"0"
    assert "EXISTS answers here only for tables of the catalog" in refusal(reader, f"EXISTS TABLE `{secret}`")


def test_control_a_show_where_and_an_apply_read_files_when_the_guard_is_bypassed(
    engine: tuple[ClickHouseSink, ReadOnlySql, Settings, Path],
) -> None:
    """Why SHOW may have no WHERE and APPLY is refused: the engine runs file() there, and EXPLAIN AST hides it."""
    _, reader, _, tmp = engine
    secret = tmp / "secret.txt"
    leak = f"SHOW TABLES WHERE startsWith(file('{secret}'), 'secret-line') AND name = 'emotion_scores'"
    assert within(DEADLINE, reader._raw, leak, "TabSeparatedRaw") == b"emotion_scores\n"
    hidden = within(DEADLINE, reader._raw, f"EXPLAIN AST {leak}", "TabSeparatedRaw").decode()
    assert "file" not in hidden
    apply = f"SELECT * APPLY file FROM (SELECT '{secret}')"
    assert within(DEADLINE, reader._raw, apply, "TabSeparatedRaw").startswith(b"secret-line-7f3a")
    assert "file" not in within(DEADLINE, reader._raw, f"EXPLAIN AST {apply}", "TabSeparatedRaw").decode()


def test_forged_lines_in_the_parse_make_it_malformed() -> None:
    """No engine: the tree check itself. Lines that a line break in a name adds never fit the counts."""
    good = ["Root (children 2)", " A (children 1)", "  B", " C"]
    root = parse_explain_ast(good)
    assert [node.kind for node in root.walk()] == ["Root", "A", "B", "C"]
    assert root.children[0].children[0].parent is root.children[0]
    for forged in (
        ["Root (children 1)", " A", " Function url"],  # an extra child
        ["Root (children 1)", " A", "Function url"],  # a second root
        ["Root (children 1)", " A", "   Function url"],  # skips a level
        ["Root (children 1)", " A (children 1)"],  # a child missing
        ["Root (children 1)", " A", ""],  # an empty line
        [],
    ):
        with pytest.raises(SqlError, match="could not be checked"):
            parse_explain_ast(forged)
    assert FUNCTIONS_THAT_REACH_OUTSIDE["file"]
