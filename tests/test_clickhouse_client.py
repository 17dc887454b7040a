"""Opening a ClickHouse client from a DSN (stream/clickhouse/client.py), and the parts that open their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.stream.clickhouse.client import open_client
from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.review.queue import ReviewQueue


def test_the_embedded_engines_directory_is_read_from_its_dsn_only() -> None:
    assert ClickHouseDsn("chdb:///var/lib/ch").directory == Path("/var/lib/ch")
    assert ClickHouseDsn("chdb://relative/dir").directory is None  # not a directory this process can own
    server = ClickHouseDsn("http://user:pw@clickhouse:8123/emostream")
    assert server.directory is None and not server.embedded and ClickHouseDsn("chdb:///x").embedded
    assert ClickHouseDsn.embedded_in(Path("rel")).url == f"chdb://{Path('rel').resolve()}"


@pytest.mark.integration
def test_the_sink_and_the_review_queue_each_open_a_client_of_their_own(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'new' / 'ch'}"
    client = open_client(dsn)  # the directory is made first
    try:
        assert (tmp_path / "new" / "ch").is_dir() and client.query("SELECT 1").result_rows == [(1,)]
    finally:
        client.close()
    sink, queue = ClickHouseSink(dsn), ReviewQueue(dsn)
    try:
        assert queue.client is not sink.client
        queue.apply_schema()  # a review service that starts before any worker
        assert queue.counts("ann").done == 0
    finally:
        queue.close()
        sink.close()
