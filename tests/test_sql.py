"""User SQL on the real engine (chDB): ClickHouse itself refuses what is not a read, and limits what is.

The hostile statements are the ones a user once got through (a DROP after a SELECT, reading a file,
a URL that hung the stream) and their relatives; after all of them the data must be unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.clickhouse.sql import Number, ReadOnlySql, SqlError, SqlLimits, SqlResult
from tests.conftest import run_cli
from tests.test_sink import scores

pytestmark = pytest.mark.integration

SECRET = "secret-line-7f3a"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[ClickHouseSink, ReadOnlySql, Path]]:
    """A writer and a read-only client on one embedded engine, as in a running worker."""
    settings = Settings(home=tmp_path / "home", sql_timeout=5, sql_max_rows=1000)
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    sink.apply_schema()
    sink.write(scores(20))
    reader = ReadOnlySql(settings.query_clickhouse(), settings)
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    yield sink, reader, tmp_path
    reader.close()
    sink.close()


def hostile_statements(tmp: Path) -> list[str]:
    secret = tmp / "secret.txt"
    return [
        "INSERT INTO emotion_scores (tweet_id, label) VALUES ('x', 'joy')",
        "DROP TABLE emotion_scores",
        "ALTER TABLE emotion_scores DELETE WHERE 1",
        "TRUNCATE TABLE emotion_scores",
        "SELECT 1; DROP TABLE emotion_scores",
        "SELECT 1 -- a comment\n; DROP TABLE emotion_scores",
        "CREATE TABLE t (x Int8) ENGINE = Memory",
        "CREATE TEMPORARY TABLE t (x Int8)",
        "OPTIMIZE TABLE emotion_scores FINAL",
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        f"SELECT file('{secret}')",
        f"SELECT FILE('{secret}')",
        f"SELECT upper(File('{secret}')) AS x",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        "SELECT * FROM s3('http://127.0.0.1:9/x.csv')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "SELECT * FROM executable('cat /etc/passwd', 'TSV', 'a String')",
        "DESCRIBE TABLE url('http://127.0.0.1:9/x', 'LineAsString')",
        "EXPLAIN SYNTAX SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
        "SELECT * FROM system.one WHERE dummy IN (SELECT 1 FROM remoteSecure('127.0.0.1:9', system.one))",
        "SELECT * FROM cluster('default', system.one)",
        f"DESCRIBE TABLE `{secret}`",
        f"EXISTS TABLE `{secret}`",
        f"SELECT * FROM emotion_scores INTO OUTFILE '{tmp / 'out.csv'}'",
        f"EXPLAIN SELECT 1 INTO OUTFILE '{tmp / 'explain.txt'}'",
        "SET readonly = 0",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT 1 SETTINGS max_execution_time = 0",
        "SELECT 1 SETTINGS max_memory_usage = 0",
        "SET max_memory_usage = 0",
        "KILL QUERY WHERE 1",
        "SYSTEM DROP MARK CACHE",
        "USE system",
        "GRANT ALL ON *.* TO default",
    ]


def test_hostile_statements_are_refused_and_the_data_is_intact(
    database: tuple[ClickHouseSink, ReadOnlySql, Path],
) -> None:
    sink, reader, tmp = database
    accepted = []
    for statement in hostile_statements(tmp):
        try:
            result = reader.query(statement)
        except SqlError:
            continue
        accepted.append((statement, result.rows))
    assert accepted == []
    assert sink.query("SELECT count() FROM emotion_scores")[1] == [(20,)]
    assert not (tmp / "out.csv").exists() and not (tmp / "explain.txt").exists()


def test_refusals_name_the_rule_that_refused(database: tuple[ClickHouseSink, ReadOnlySql, Path]) -> None:
    _, reader, tmp = database
    cases = {
        "SELECT 1; SELECT 2": "Multi-statements are not allowed",
        "DROP TABLE emotion_scores": "only statements that read",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')": "the table function url() is not allowed",
        "DESCRIBE TABLE s3('http://127.0.0.1:9/x.csv')": "the table function s3() is not allowed",
        f"SELECT file('{tmp / 'secret.txt'}')": "file() function",
        "SELECT 1 INTO OUTFILE '/tmp/x.csv'": "INTO OUTFILE",
        "SELECT * FROM system.numbers LIMIT 5000": "Limit for result exceeded",
        "   ": "empty statement",
    }
    for statement, message in cases.items():
        with pytest.raises(SqlError, match=re.escape(message)):
            reader.query(statement)


def test_reads_work_after_refusals_and_print_as_clickhouse_prints(
    database: tuple[ClickHouseSink, ReadOnlySql, Path],
) -> None:
    _, reader, _ = database
    with pytest.raises(SqlError):
        reader.query("SELECT * FROM system.numbers LIMIT 5000")  # fails half-way through its result
    result = reader.query(
        "SELECT count() AS n, round(toFloat32(0.905), 3) AS f, toUInt64(18446744073709551615) AS big, "
        "[toFloat32(0.1)] AS a FROM emotion_scores"
    )
    assert result.columns == ["n", "f", "big", "a"]
    assert result.types == ["UInt64", "Float32", "UInt64", "Array(Float32)"]
    n, f, big, a = result.rows[0]
    assert (n, str(f), big, str(a)) == (20, "0.905", 18446744073709551615, "[0.1]")
    assert {"emotion_scores", "dead_letters"} <= {row[0] for row in reader.query("SHOW TABLES").rows}
    assert reader.query("DESCRIBE TABLE emotion_scores").rows[0][:2] == ["tweet_id", "String"]
    assert reader.query("WITH 2 AS x SELECT x * 3").rows == [[6]]
    assert reader.query("EXPLAIN SELECT 1").rows
    assert reader.query("SELECT * FROM (SELECT * FROM numbers(3))").rows == [[0], [1], [2]]  # an allowed one
    assert reader.query("SELECT getSetting('max_memory_usage')").rows == [[Settings().sql_max_memory]]


def test_a_statement_runs_no_longer_than_the_timeout(tmp_path: Path) -> None:
    reader = ReadOnlySql(Settings(home=tmp_path).query_clickhouse(), SqlLimits(sql_timeout=1))
    try:
        with pytest.raises(SqlError, match="Timeout exceeded"):
            reader.query("SELECT count() FROM system.numbers WHERE sipHash64(number) % 3 = 7")
    finally:
        reader.close()


def test_results_keep_the_text_of_their_numbers() -> None:
    body = b'{"meta": [{"name": "f", "type": "Float32"}], "data": [[0.905], [1e-7]], "rows": 2}'
    result = SqlResult.from_json_compact(body)
    assert [str(row[0]) for row in result.rows] == ["0.905", "1e-7"]
    assert isinstance(result.rows[0][0], Number) and result.rows[0][0] == pytest.approx(0.905)


def test_sql_command_refuses_writes_and_prints_csv_with_lf(tmp_path: Path) -> None:
    env = {"EMOSTREAM_HOME": str(tmp_path / "home")}
    sink = ClickHouseSink(Settings(home=tmp_path / "home").resolved_clickhouse_dsn())
    sink.apply_schema()
    sink.write(scores(7))
    sink.close()  # nothing runs: `sql` opens the directory itself
    refused = run_cli("sql", "DROP TABLE emotion_scores", env=env)
    assert refused.returncode == 2 and "only statements that read" in refused.stderr
    result = run_cli(
        "sql", "--format", "csv", "SELECT count() AS n, toFloat32(0.905) AS f FROM emotion_scores", env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "n,f\n7,0.905\n"
    table = run_cli("sql", "SELECT round(toFloat32(0.905), 3) AS f", env=env)
    assert "0.905" in table.stdout and "0.9049999" not in table.stdout
    assert os.stat(tmp_path / "home" / "clickhouse").st_size  # the data directory is still there
