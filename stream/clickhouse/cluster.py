"""emostream's schema for a ClickHouse cluster, made from the single-node DDL (``deploy/clickhouse/*.sql``).

One source: each single-node statement becomes its cluster variant by the rules below, so an object or a
migration added to ``deploy/clickhouse/*.sql`` has its cluster variant without anyone writing it twice.
emostream never applies these itself; an operator does, once, before the first worker starts (see
``deploy/clickhouse/cluster/README.md``)::

    python -m emostream.stream.clickhouse.cluster            # every statement, on stdout
    python -m emostream.stream.clickhouse.cluster DIR        # DIR/001_emotion_scores.sql, ...: one per file

The rules, each statement ``ON CLUSTER '{cluster}'``:

- ``CREATE TABLE name``: on every shard the replicated table ``name_local`` (the engine's ``Replicated``
  variant, its Keeper path ``/clickhouse/tables/{shard}/{database}/name_local``), and in front of it a
  Distributed table under emostream's name, ``name``, sharded by :data:`SHARDING_KEYS`;
- ``ALTER TABLE name``: the same ALTER on ``name_local``, then its column clauses on ``name`` (a
  Distributed table holds columns, not data: it takes no sorting key, index or TTL);
- ``CREATE MATERIALIZED VIEW``: on the local tables, the one it reads and the one it writes, so each shard
  keeps the rollup of its own rows;
- ``CREATE VIEW``: as it is, over the Distributed tables.

A statement of another kind, or a table without a sharding key, stops the generation
(:class:`ClusterDdlError`): its cluster variant needs a decision, made here once.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from emostream.stream.clickhouse.ddl import DDL_DIR, file_statements

ON_CLUSTER = "ON CLUSTER '{cluster}'"
KEEPER_PATH = "/clickhouse/tables/{shard}/{database}/"
# Every row of a tweet (each model version, each re-delivery, its review items and labels) on one shard:
# ReplacingMergeTree collapses repeats only within a shard, and emotion_scores_latest keeps one row per
# tweet with FINAL / LIMIT 1 BY on each shard. Dead letters by their source coordinates, for the same
# reason. The rollup's key only places rows inserted through it (a rebuild): its views write each shard's
# own rows, so a group's sums may lie on several shards, and it is read with sum() as on one node.
SHARDING_KEYS = {
    "emotion_scores": "cityHash64(tweet_id)",
    "dead_letters": "cityHash64(topic, partition, offset)",
    "emotion_trends_minute": "cityHash64(brand, minute)",
    "review_queue": "cityHash64(tweet_id)",
    "review_labels": "cityHash64(tweet_id)",
    "emotion_superseded": "cityHash64(tweet_id)",
    "review_reviewers": "cityHash64(name)",  # every row of a name on one shard: its latest row is found there
    "review_adjudications": "cityHash64(tweet_id)",
    "review_gold": "cityHash64(tweet_id)",
}
# The ALTER clauses a Distributed table takes (its columns); the others are the local tables' storage.
COLUMN_CLAUSE = re.compile(r"(ADD|MODIFY|DROP|RENAME|COMMENT) COLUMN\b")
CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\b")
ALTER_TABLE = re.compile(r"ALTER TABLE (\w+)\s+")
MATERIALIZED_VIEW = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\b")
VIEW = re.compile(r"CREATE VIEW IF NOT EXISTS (\w+) AS\b")
ENGINE = re.compile(r"\bENGINE = (\w*MergeTree)(?:\(([^()]*)\))?(?!\()")  # arguments without parentheses


class ClusterDdlError(ValueError):
    """A single-node statement whose cluster variant no rule here makes."""


def cluster_statements(directory: Path = DDL_DIR) -> list[str]:
    """The cluster variant of every statement of ``directory/*.sql``, in file-name order."""
    return [statement for _, statements in cluster_files(directory) for statement in statements]


def cluster_files(directory: Path = DDL_DIR) -> list[tuple[str, list[str]]]:
    """Per single-node file (by name, in order), the cluster variants of its statements."""
    files = sorted(directory.glob("*.sql"))
    sources = [(file.name, file_statements(file)) for file in files]
    tables = {m[1] for _, statements in sources for s in statements if (m := CREATE_TABLE.match(s))}
    return [(name, [v for s in statements for v in cluster_variant(s, tables)]) for name, statements in sources]


def cluster_variant(statement: str, tables: set[str]) -> list[str]:
    """The statements that do on a cluster what ``statement`` does on one node. ``tables``: the names of
    the single-node tables (each a ``_local`` table behind a Distributed one on the cluster)."""
    if created := CREATE_TABLE.match(statement):
        return create_table(statement, created[1])
    if altered := ALTER_TABLE.match(statement):
        return alter_table(statement, altered, tables)
    if view := MATERIALIZED_VIEW.match(statement):
        return [materialized_view(statement, view, tables)]
    if VIEW.match(statement):
        return [on_cluster(statement)]
    raise ClusterDdlError(f"no cluster rule for {' '.join(statement.split()[:6])!r}: add one to {__name__}")


def on_cluster(statement: str, rename: str | None = None) -> str:
    """``statement`` with ``ON CLUSTER`` after the object it names (renamed to ``rename`` if given)."""
    found = re.match(r"(CREATE (?:TABLE|MATERIALIZED VIEW|VIEW) IF NOT EXISTS |ALTER TABLE )(\w+)", statement)
    if found is None:
        raise ClusterDdlError(f"not a CREATE or ALTER: {statement[:60]!r}")
    return f"{found[1]}{rename or found[2]} {ON_CLUSTER}{statement[found.end() :]}"


def create_table(statement: str, name: str) -> list[str]:
    """``name_local``, replicated, then the Distributed ``name`` in front of it."""
    engines = ENGINE.findall(statement)
    if len(engines) != 1 or engines[0][0].startswith("Replicated"):
        raise ClusterDdlError(f"{name}: no MergeTree engine to replicate ({', '.join(e for e, _ in engines)})")
    if name not in SHARDING_KEYS:
        raise ClusterDdlError(f"{name}: choose its sharding key in {__name__}.SHARDING_KEYS")
    local = f"{name}_local"

    def replicated(engine: re.Match[str]) -> str:
        arguments = [f"'{KEEPER_PATH}{local}'", "'{replica}'", *([engine[2]] if engine[2] else [])]
        return f"ENGINE = Replicated{engine[1]}({', '.join(arguments)})"

    distributed = (
        f"CREATE TABLE IF NOT EXISTS {name} {ON_CLUSTER} AS {local}\n"
        f"ENGINE = Distributed('{{cluster}}', currentDatabase(), {local}, {SHARDING_KEYS[name]})"
    )
    return [ENGINE.sub(replicated, on_cluster(statement, local)), distributed]


def alter_table(statement: str, head: re.Match[str], tables: set[str]) -> list[str]:
    """The ALTER on ``name_local``, then its column clauses (if any) on the Distributed ``name``."""
    name = head[1]
    if name not in tables:
        raise ClusterDdlError(f"ALTER TABLE {name}: not a table of emostream's DDL")
    clauses = split_clauses(statement[head.end() :])
    columns = [clause for clause in clauses if COLUMN_CLAUSE.match(clause)]
    variants = [on_cluster(statement, f"{name}_local")]
    if columns == clauses:
        variants.append(on_cluster(statement))
    elif columns:
        indent = statement[head.end(1) : head.end()]
        variants.append(f"ALTER TABLE {name} {ON_CLUSTER}{indent}" + f",{indent}".join(columns))
    return variants


def materialized_view(statement: str, head: re.Match[str], tables: set[str]) -> str:
    """The view on the local tables: it reads one shard's rows and writes that shard's rollup."""
    name, target = head[1], head[2]
    query = statement[head.end() :]
    sources = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", query)
    if target not in tables or len(sources) != 1 or sources[0] not in tables:
        raise ClusterDdlError(f"{name}: a materialized view from one of emostream's tables into another, only")
    query = re.sub(rf"\bFROM\s+{sources[0]}\b", f"FROM {sources[0]}_local", query)
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {ON_CLUSTER} TO {target}_local AS{query}"


def split_clauses(text: str) -> list[str]:
    """An ALTER's clauses: ``text`` split at the commas outside parentheses and quotes, comments left out."""
    clauses: list[str] = []
    clause, depth = "", 0
    for piece, kind in lex(text):
        if kind == "comment":
            continue
        if kind == "code" and piece == "," and depth == 0:
            clauses.append(clause.strip())
            clause = ""
            continue
        if kind == "code":
            depth += (piece in "([") - (piece in ")]")
        clause += piece
    clauses.append(clause.strip())
    return [clause for clause in clauses if clause]


def lex(text: str) -> Iterator[tuple[str, str]]:
    """``text`` in pieces: a quoted name or string (``quoted``), a ``--`` comment to the end of its line
    (``comment``), else one character (``code``)."""
    position = 0
    while position < len(text):
        char = text[position]
        if char in "'\"`":
            end = position + 1
            while end < len(text) and text[end] != char:
                end += 2 if text[end] == "\\" else 1
            yield text[position : end + 1], "quoted"
            position = end + 1
        elif text.startswith("--", position):
            end = text.find("\n", position)
            end = len(text) if end < 0 else end
            yield text[position:end], "comment"
            position = end
        else:
            yield char, "code"
            position += 1


def render(source: str, statements: Sequence[str]) -> str:
    """One file of cluster DDL: what it was made from, then its statements."""
    header = (
        f"-- The cluster variant of deploy/clickhouse/{source} (whose comments say why), made by\n"
        "-- `python -m emostream.stream.clickhouse.cluster`: change that file, not this one.\n"
    )
    return header + "".join(f"\n{statement};\n" for statement in statements)


def main(argv: Sequence[str] = ()) -> int:
    """Write the cluster DDL: on stdout, or a file per single-node file into the directory named."""
    if len(argv) > 1 or any(arg.startswith("-") for arg in argv):
        print("usage: python -m emostream.stream.clickhouse.cluster [DIR]", file=sys.stderr)
        return 2
    files = cluster_files()
    if not argv:
        sys.stdout.write("\n".join(render(name, statements) for name, statements in files))
        return 0
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, statements in files:
        (out / name).write_text(render(name, statements))
        print(out / name, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
