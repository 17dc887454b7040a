"""The cluster DDL, made from the single-node DDL (stream/clickhouse/cluster.py): its rules, its command,
and an old cluster migrated by it on the embedded engine. tests/test_deploy.py runs the whole of it there
with emostream's sink on top."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emostream.stream.clickhouse import cluster
from emostream.stream.clickhouse.cluster import (
    ClusterDdlError,
    cluster_files,
    cluster_statements,
    cluster_variant,
    main,
    split_clauses,
)
from emostream.stream.clickhouse.ddl import DDL_DIR, ddl_statements, file_statements

TABLES = {"scores", "rollup"}


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cluster.SHARDING_KEYS, "scores", "cityHash64(id)")
    monkeypatch.setitem(cluster.SHARDING_KEYS, "rollup", "cityHash64(day)")


def test_a_table_becomes_a_replicated_local_table_behind_a_distributed_one(keys: None) -> None:
    local, distributed = cluster_variant(
        "CREATE TABLE IF NOT EXISTS scores\n(\n    id String,  -- the tweet, (a comment)\n    v UInt8\n)\n"
        "ENGINE = ReplacingMergeTree(v)\nORDER BY id",
        TABLES,
    )
    assert local == (
        "CREATE TABLE IF NOT EXISTS scores_local ON CLUSTER '{cluster}'\n(\n    id String,  -- the tweet, (a comment)\n"
        "    v UInt8\n)\nENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/scores_local', "
        "'{replica}', v)\nORDER BY id"
    )
    assert distributed == (
        "CREATE TABLE IF NOT EXISTS scores ON CLUSTER '{cluster}' AS scores_local\n"
        "ENGINE = Distributed('{cluster}', currentDatabase(), scores_local, cityHash64(id))"
    )
    rollup = "CREATE TABLE IF NOT EXISTS rollup (day Date) ENGINE = SummingMergeTree ORDER BY day"
    local = cluster_variant(rollup, TABLES)[0]
    assert (
        "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/rollup_local', '{replica}')"
        in local
    )


def test_an_alter_runs_on_the_local_table_and_its_column_clauses_on_the_distributed_one() -> None:
    both = "ALTER TABLE scores\n    ADD COLUMN IF NOT EXISTS a String AFTER id,\n    MODIFY COLUMN b Int64"
    assert cluster_variant(both, TABLES) == [
        "ALTER TABLE scores_local ON CLUSTER '{cluster}'\n    ADD COLUMN IF NOT EXISTS a String AFTER id,\n"
        "    MODIFY COLUMN b Int64",
        "ALTER TABLE scores ON CLUSTER '{cluster}'\n    ADD COLUMN IF NOT EXISTS a String AFTER id,\n"
        "    MODIFY COLUMN b Int64",
    ]
    key = "ALTER TABLE scores\n    ADD COLUMN IF NOT EXISTS h String,\n    MODIFY ORDER BY (id, h)"
    assert cluster_variant(key, TABLES) == [
        "ALTER TABLE scores_local ON CLUSTER '{cluster}'\n    ADD COLUMN IF NOT EXISTS h String,\n"
        "    MODIFY ORDER BY (id, h)",
        "ALTER TABLE scores ON CLUSTER '{cluster}'\n    ADD COLUMN IF NOT EXISTS h String",
    ]
    assert cluster_variant("ALTER TABLE scores MODIFY TTL day + INTERVAL 1 YEAR", TABLES) == [
        "ALTER TABLE scores_local ON CLUSTER '{cluster}' MODIFY TTL day + INTERVAL 1 YEAR"
    ]


def test_a_materialized_view_sits_on_the_local_tables_and_a_view_on_the_distributed_ones() -> None:
    (view,) = cluster_variant(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO rollup AS\nSELECT toDate(at) AS day FROM scores GROUP BY 1",
        TABLES,
    )
    assert view == (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS mv ON CLUSTER '{cluster}' TO rollup_local AS\n"
        "SELECT toDate(at) AS day FROM scores_local GROUP BY 1"
    )
    assert cluster_variant("CREATE VIEW IF NOT EXISTS latest AS\nSELECT * FROM scores FINAL", TABLES) == [
        "CREATE VIEW IF NOT EXISTS latest ON CLUSTER '{cluster}' AS\nSELECT * FROM scores FINAL"
    ]


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        ("CREATE TABLE IF NOT EXISTS other (x UInt8) ENGINE = MergeTree ORDER BY x", "sharding key"),
        ("CREATE TABLE IF NOT EXISTS scores (x UInt8) ENGINE = Memory", "no MergeTree engine"),
        ("CREATE TABLE IF NOT EXISTS scores (x UInt8) ENGINE = MergeTree(f(x)) ORDER BY x", "no MergeTree engine"),
        ("ALTER TABLE elsewhere ADD COLUMN IF NOT EXISTS x UInt8", "not a table of emostream's DDL"),
        ("CREATE MATERIALIZED VIEW IF NOT EXISTS m TO rollup AS SELECT * FROM scores JOIN rollup USING id", "only"),
        ("CREATE DICTIONARY IF NOT EXISTS d (id UInt64) PRIMARY KEY id", "no cluster rule"),
    ],
)
def test_what_no_rule_covers_stops_the_generation(keys: None, statement: str, says: str) -> None:
    with pytest.raises(ClusterDdlError, match=says):
        cluster_variant(statement, TABLES)


def test_clauses_split_at_top_level_commas_only() -> None:
    text = "ADD COLUMN a Tuple(x UInt8, y String) DEFAULT (1, 'a,b'), -- one, two\n MODIFY COLUMN `c,d` String"
    assert split_clauses(text) == [
        "ADD COLUMN a Tuple(x UInt8, y String) DEFAULT (1, 'a,b')",
        "MODIFY COLUMN `c,d` String",
    ]
    commented = "ALTER TABLE scores ADD COLUMN a UInt8, -- isn't a clause\n MODIFY ORDER BY (id, a)"
    assert cluster_variant(commented, TABLES)[1] == "ALTER TABLE scores ON CLUSTER '{cluster}' ADD COLUMN a UInt8"


def test_every_single_node_file_and_table_has_its_cluster_variant() -> None:
    files = cluster_files()
    assert [name for name, _ in files] == sorted(f.name for f in DDL_DIR.glob("*.sql"))
    assert cluster_statements() == [s for _, statements in files for s in statements]
    single = ddl_statements()
    tables = {s.split()[5] for s in single if s.startswith("CREATE TABLE IF NOT EXISTS")}
    assert tables == set(cluster.SHARDING_KEYS)  # no key left over for a table that is gone
    assert all(" ON CLUSTER '{cluster}'" in s for s in cluster_statements())


def test_one_source_no_cluster_sql_is_kept_beside_the_single_node_ddl() -> None:
    assert not list((DDL_DIR / "cluster").glob("*.sql")), "made by stream/clickhouse/cluster.py: do not commit copies"


def test_the_command_writes_a_file_per_single_node_file_or_everything_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "out")]) == 0
    for name, statements in cluster_files():
        text = (tmp_path / "out" / name).read_text()
        assert text.startswith(f"-- The cluster variant of deploy/clickhouse/{name} ")
        assert file_statements(tmp_path / "out" / name) == statements
    capsys.readouterr()
    assert main([]) == 0
    (tmp_path / "all.sql").write_text(capsys.readouterr().out)
    assert file_statements(tmp_path / "all.sql") == cluster_statements()
    assert main(["--help"]) == 2


# In a process of its own, like tests/test_deploy.py's CLUSTER_CHECK: the engine reads its configuration (a
# cluster of one local shard, named by the {cluster} macro) once per process. Replicated engines become their
# plain counterparts and ON CLUSTER goes (both need Keeper), as there.
OLD_CLUSTER = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path

    work, files = Path(sys.argv[1]), sorted(Path(sys.argv[2]).glob("*.sql"))
    shard = "<shard><replica><host>localhost</host><port>9000</port></replica></shard>"
    (work / "config.xml").write_text(
        f"<clickhouse><tcp_port>9000</tcp_port><macros><cluster>c1</cluster><shard>01</shard>"
        f"<replica>r1</replica></macros><remote_servers><c1>{shard}</c1></remote_servers></clickhouse>"
    )
    import clickhouse_connect
    from emostream.stream.clickhouse.ddl import file_statements

    options = {"config-file": str(work / "config.xml")}
    client = clickhouse_connect.get_client(dsn=f"chdb://{work / 'ch'}", chdb_options=options)
    run = client.command
    distributed = "CREATE TABLE {0} AS {0}_local ENGINE = Distributed('c1', currentDatabase(), {0}_local)"
    # A cluster made before text_sha256 and before the bounded dead letters, each with a row.
    queue = ", ".join(f"{c} String" for c in ("tweet_id", "brand", "text", "model_version", "label", "reason"))
    run(f"CREATE TABLE review_queue_local ({queue}, queued_at DateTime64(3, 'UTC')) ENGINE = "
        "ReplacingMergeTree(queued_at) ORDER BY tweet_id")
    run(distributed.format("review_queue"))
    run("CREATE TABLE dead_letters_local (topic String, partition UInt32, offset UInt64, value Nullable(String), "
        "error String, failed_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree(failed_at) "
        "ORDER BY (topic, partition, offset)")
    run(distributed.format("dead_letters"))
    run("INSERT INTO review_queue_local (tweet_id, text) VALUES ('t1', 'hello')")
    run("INSERT INTO dead_letters_local (topic, offset, value, error) VALUES ('tweets', 7, 'x', 'not JSON')")
    for _ in range(2):  # applied again (an upgrade), nothing changes
        for file in files:
            for statement in file_statements(file):
                statement = re.sub(r"\\s+ON CLUSTER\\s+'\\{cluster\\}'", "", statement)
                run(re.sub(r"Replicated(\\w*MergeTree)\\('[^']*',\\s*'[^']*'(?:,\\s*)?", r"\\1(", statement))
    query = lambda sql: [list(row) for row in client.query(sql).result_rows]
    print(json.dumps({
        "columns": query("SELECT table, name, default_kind FROM system.columns WHERE database = currentDatabase() "
                         "AND name IN ('text_sha256', 'value_length', 'value_sha256') "
                         "AND match(table, '^(dead_letters|review_queue)') ORDER BY table, name"),
        "keys": query("SELECT name, sorting_key FROM system.tables WHERE name = 'review_queue_local'"),
        "queue": query("SELECT tweet_id, text_sha256 = lower(hex(SHA256(text))) FROM review_queue"),
        "dead_letters": query("SELECT offset, value_length FROM dead_letters"),
    }))
    """
)


@pytest.mark.integration
def test_the_generated_files_migrate_an_old_cluster_and_keep_its_rows(tmp_path: Path) -> None:
    assert main([str(tmp_path / "ddl")]) == 0  # what an operator runs, then applies file by file
    script = [sys.executable, "-c", OLD_CLUSTER, str(tmp_path), str(tmp_path / "ddl")]
    done = subprocess.run(script, capture_output=True, text=True, timeout=180)  # the installed emostream
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["columns"] == [
        [table, name, kind]
        for table in ("dead_letters", "dead_letters_local")
        for name, kind in (("value_length", ""), ("value_sha256", ""))
    ] + [[table, "text_sha256", "MATERIALIZED"] for table in ("review_queue", "review_queue_local")]
    assert out["keys"] == [["review_queue_local", "tweet_id, text_sha256"]]
    assert out["queue"] == [["t1", 1]] and out["dead_letters"] == [[7, None]]
