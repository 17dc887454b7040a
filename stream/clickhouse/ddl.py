"""emostream's schema: the statements of ``deploy/clickhouse/*.sql``, and applying them to a client.

Applied at every start (``ClickHouseSink.apply_schema``), so every statement is idempotent: ``CREATE ...
IF NOT EXISTS``, and ALTERs that change nothing the second time. The ALTERs are the in-place migrations of
tables an older release created; the one a Distributed table cannot take (a new sorting key) is left to
the cluster DDL (:mod:`emostream.stream.clickhouse.cluster`), which migrates the ``*_local`` tables behind it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

# the repository root in a checkout, the emostream package in a wheel (deploy/ is mapped to emostream.deploy)
DDL_DIR = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
UNKNOWN_TABLE = 60  # ClickHouse's error code for a table that does not exist
log = logging.getLogger("emostream.sink")


class SchemaError(RuntimeError):
    """emostream's tables or views cannot be created here (usually: an older table of another shape)."""


def ddl_statements(directory: Path = DDL_DIR) -> list[str]:
    """The statements of every ``*.sql`` file, in file-name order (comments stripped)."""
    statements: list[str] = []
    for file in sorted(directory.glob("*.sql")):
        statements += file_statements(file)
    return statements


def file_statements(file: Path) -> list[str]:
    """The statements of one ``*.sql`` file, in order (comment lines stripped)."""
    text = "\n".join(line for line in file.read_text().splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def is_unknown_table(exc: DatabaseError) -> bool:
    """Whether ClickHouse refused a statement because a table it names does not exist."""
    return getattr(exc, "code", None) == UNKNOWN_TABLE or "UNKNOWN_TABLE" in str(exc)


def apply_schema(client: Client) -> None:
    """Every statement of :func:`ddl_statements`, in order; a refusal is a :class:`SchemaError`."""
    for statement in ddl_statements():
        try:
            client.command(statement)
        except DatabaseError as exc:
            if migration_for_the_local_table(client, statement, exc):
                continue
            words = statement.split()
            what = " ".join(words[: words.index("EXISTS") + 2] if "EXISTS" in words else words[:4])
            raise SchemaError(
                f"ClickHouse refused emostream's DDL ({what}): {str(exc).splitlines()[0]}. "
                f"A table of that name with another shape? The DDL is in {DDL_DIR}"
            ) from None


def migration_for_the_local_table(client: Client, statement: str, exc: DatabaseError) -> bool:
    """An ALTER a Distributed table cannot take (a new sorting key): on a cluster the tables are
    ``*_local`` behind Distributed ones, and the cluster DDL migrates those; nothing to do here."""
    if not statement.startswith("ALTER TABLE") or "NOT_IMPLEMENTED" not in str(exc):
        return False
    table = statement.split()[2]
    engine = client.query(
        "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows
    if not engine or engine[0][0] != "Distributed":
        return False
    log.info("%s is Distributed: its local tables are migrated by the cluster DDL, not here", table)
    return True
