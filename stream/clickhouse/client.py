"""A ClickHouse client of one's own, opened from a DSN: the embedded engine or a server, one way.

``chdb:///DIR`` is the embedded engine (chDB in this process, its data in ``DIR``, made here if missing),
``http(s)://user:pw@host:8123/db`` a server; clickhouse-connect opens both. Every part that talks to
ClickHouse opens a client of its own (the sink, the review queue): a client is not shared between threads
that use it at once, and a chDB handle of one's own is closed without closing another part's.
"""

from __future__ import annotations

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from emostream.stream.clickhouse.dsn import ClickHouseDsn


def open_client(dsn: ClickHouseDsn | str) -> Client:
    """A new clickhouse-connect client for ``dsn`` (the embedded engine's directory made first). Blocking."""
    parsed = ClickHouseDsn.of(dsn)
    if parsed.directory is not None:
        parsed.directory.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=parsed.url)
