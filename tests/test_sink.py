"""The ClickHouse sink on the real engine (chDB through clickhouse-connect)."""

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emostream.model.registry import version_order
from emostream.schemas import DeadLetter, EmotionScore
from emostream.stream.clickhouse.ddl import DDL_DIR, ddl_statements
from emostream.stream.clickhouse.sink import ClickHouseSink

pytestmark = pytest.mark.integration


def scores(n: int, version: str = "v0001") -> list[EmotionScore]:
    created = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    return [
        EmotionScore(
            tweet_id=f"t{i}",
            brand="acme" if i % 2 else "globex",
            created_at=created + timedelta(seconds=i),
            scored_at=datetime.now(UTC),
            model_version=version,
            label="joy",
            confidence=0.7,
            margin=0.5,
            sadness=0.1,
            joy=0.7,
            love=0.05,
            anger=0.05,
            fear=0.05,
            surprise=0.05,
        )
        for i in range(n)
    ]


def test_redelivered_batches_count_once(tmp_path: Path) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.apply_schema()
        sink.apply_schema()  # idempotent
        sink.write(scores(100))
        sink.write(scores(100)[40:])  # a crash re-delivers part of the stream
        sink.write(scores(10, version="v0002"))  # a new model version is a new row
        ((total,),) = sink.query("SELECT count() FROM emotion_scores")[1]
        assert total == 110  # the re-delivered 60 were already there and are not written again
        rows = sink.query(
            "SELECT model_version, count(), uniqExact(tweet_id) FROM emotion_scores FINAL "
            "GROUP BY model_version ORDER BY model_version"
        )[1]
        assert rows == [("v0001", 100, 100), ("v0002", 10, 10)]
        ((created,),) = sink.query("SELECT min(created_at) FROM emotion_scores")[1]
        assert created.replace(tzinfo=UTC) == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    finally:
        sink.close()


def test_a_dropped_table_is_recreated_and_the_batch_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.apply_schema()
        sink.write(scores(10))
        sink.client.command("DROP TABLE emotion_scores")  # what the unguarded SQL endpoint once allowed
        with caplog.at_level("ERROR", logger="emostream.sink"):
            sink.write(scores(5, version="v0002"))
        assert "emotion_scores had disappeared" in caplog.text
        assert sink.query("SELECT model_version, count() FROM emotion_scores GROUP BY model_version")[1] == [
            ("v0002", 5)
        ]
    finally:
        sink.close()


def test_other_write_errors_are_raised_for_the_retry_loop(tmp_path: Path) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.client.command("CREATE TABLE emotion_scores (x Int8) ENGINE = MergeTree ORDER BY x")  # schema drift
        with pytest.raises(Exception, match="tweet_id"):
            sink.write(scores(3))
        assert sink.query("SELECT count() FROM emotion_scores")[1] == [(0,)]
    finally:
        sink.close()


NO_OP_THE_SECOND_TIME = {  # each tested on the engine: below, and in tests/test_review_data.py
    "MODIFY COLUMN tweets Int64",
    "MODIFY ORDER BY (tweet_id, text_sha256)",
    "MODIFY COLUMN text_sha256 String MATERIALIZED lower(hex(SHA256(text)))",
}


def test_ddl_files_parse_into_idempotent_statements() -> None:
    """Applied at every start: creations that skip what exists, and ALTERs that change nothing the second time."""
    statements = ddl_statements()
    creations = ("CREATE TABLE IF NOT EXISTS", "CREATE MATERIALIZED VIEW IF NOT EXISTS", "CREATE VIEW IF NOT EXISTS")
    for statement in statements:
        if statement.startswith("ALTER TABLE"):
            clauses = re.split(r",\s*(?=ADD|MODIFY|DROP|RENAME)", statement.split(None, 3)[3])
            assert all(c.startswith("ADD COLUMN IF NOT EXISTS") or c in NO_OP_THE_SECOND_TIME for c in clauses), (
                statement
            )
        else:
            assert statement.startswith(creations), statement[:80]
    assert statements


def test_dead_letters_made_before_they_were_bounded_gain_the_columns_and_keep_their_rows(tmp_path: Path) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.client.command(
            "CREATE TABLE dead_letters (topic LowCardinality(String), partition UInt32, offset UInt64, "
            "key Nullable(String), value Nullable(String), error String, failed_at DateTime64(3, 'UTC'), "
            "inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree(failed_at) "
            "ORDER BY (topic, partition, offset)"
        )
        sink.client.command(
            "INSERT INTO dead_letters (topic, partition, offset, value, error) VALUES ('t', 0, 1, 'x', 'old')"
        )
        sink.apply_schema()
        sink.apply_schema()
        sink.write([], [DeadLetter.of("t", 0, 2, None, b"y" * 20_000, "new")])
        rows = sink.query(
            "SELECT offset, length(value), value_length, value_sha256, error FROM dead_letters ORDER BY offset"
        )[1]
        assert rows == [
            (1, 1, None, None, "old"),
            (2, 16_384, 20_000, hashlib.sha256(b"y" * 20_000).hexdigest(), "new"),
        ]
    finally:
        sink.close()


def test_an_unsigned_rollup_becomes_signed_once_and_keeps_its_rows(tmp_path: Path) -> None:
    """Tables made by the first 003_trends.sql count tweets as UInt64; a superseded row needs -1."""
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        old = next(s for s in ddl_statements() if s.startswith("CREATE TABLE IF NOT EXISTS emotion_trends_minute"))
        sink.client.command(old.replace("tweets        Int64", "tweets        UInt64"))
        sink.client.command(
            "INSERT INTO emotion_trends_minute (brand, minute, model_version, label, tweets, joy) "
            "VALUES ('acme', '2026-11-01 12:00:00', 'v0001', 'joy', 3, 2.1)"
        )
        sink.apply_schema()
        sink.apply_schema()
        mutations = "SELECT count() FROM system.mutations WHERE table = 'emotion_trends_minute'"
        assert sink.query(mutations)[1] == [(1,)]  # the rewrite, once: the second ALTER is a no-op
        assert sink.query("SELECT toTypeName(tweets), tweets, joy FROM emotion_trends_minute")[1] == [("Int64", 3, 2.1)]
    finally:
        sink.close()


def test_version_order_puts_the_newest_last_and_clickhouse_agrees(tmp_path: Path) -> None:
    names = ["dev-model", "v0001", "v0002", "v001", "v9999", "v10000", "v00010", "zz", "v0002x", "V0003"]
    assert sorted(names, key=version_order) == [
        "V0003", "dev-model", "v0002x", "v001", "zz", "v0001", "v0002", "v00010", "v9999", "v10000",
    ]  # fmt: skip
    assert max(["v0001", f"v{2**64}"], key=version_order) == "v0001"  # past 64 bits, both read 0
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.apply_schema()
        names.append(f"v{2**64}")  # past 64 bits: read as 0 on both sides
        tweets = {f"t{i}": names[i:] + names[: i % 3] for i in range(len(names))}  # overlapping subsets
        sink.write([row for tweet_id, held in tweets.items() for row in one_tweet(tweet_id, held)])
        latest = dict(sink.query("SELECT tweet_id, model_version FROM emotion_scores_latest")[1])
        assert latest == {tweet_id: max(held, key=version_order) for tweet_id, held in tweets.items()}
    finally:
        sink.close()


def one_tweet(tweet_id: str, versions: list[str]) -> list[EmotionScore]:
    return [row.model_copy(update={"tweet_id": tweet_id, "model_version": v}) for v in versions for row in scores(1)]


def test_a_dropped_superseded_table_is_named_and_recreated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.apply_schema()
        sink.write(scores(4))
        sink.client.command("DROP TABLE emotion_superseded")
        with caplog.at_level("ERROR", logger="emostream.sink"):
            sink.write(scores(2, version="v0002"))
        assert "table emotion_superseded had disappeared" in caplog.text
        assert sink.query("SELECT tweet_id, model_version, superseded_by FROM emotion_superseded ORDER BY ALL")[1] == [
            ("t0", "v0001", "v0002"),
            ("t1", "v0001", "v0002"),
        ]
    finally:
        sink.close()


def test_the_production_reader_user_parses_and_may_only_select(tmp_path: Path) -> None:
    """deploy/clickhouse/access/ cannot be applied to chDB (it has no users), but its parser can read it."""
    statements = ddl_statements(DDL_DIR / "access")
    assert statements, "no access DDL"
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        parsed = [
            sink.client.query("SELECT formatQuerySingleLine({s:String})", parameters={"s": s}).result_rows[0][0]
            for s in statements
        ]
    finally:
        sink.close()
    profile = next(p for p in parsed if p.startswith("CREATE SETTINGS PROFILE"))
    assert "readonly = 1" in profile and "max_execution_time" in profile and "max_result_rows" in profile
    grants = [p for p in parsed if p.startswith("GRANT")]
    assert grants and all(g.startswith("GRANT SELECT ON ") and g.endswith(" TO emostream_reader") for g in grants)
    assert not any(s.startswith(("GRANT ALL", "REVOKE")) for s in parsed)


def test_redelivered_dead_letters_count_once_and_keep_their_bytes(tmp_path: Path) -> None:
    from emostream.schemas import DeadLetter
    from emostream.settings import Settings
    from emostream.stream.clickhouse.sql import ReadOnlySql

    letters = [
        DeadLetter(topic="tweets", partition=p, offset=o, key=b"k", value=v, error="value is not JSON")
        for p, o, v in ((0, 5, b"not json"), (1, 5, b"\xff\xfe binary"), (1, 6, None))
    ]
    assert letters[1].source_key == b"tweets/1/5"
    settings = Settings(home=tmp_path)
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    reader = ReadOnlySql(settings.query_clickhouse(), settings)
    try:
        sink.apply_schema()
        sink.write([], letters)
        sink.write(scores(2), letters[1:])  # a crash re-delivers part of the batch
        assert sink.query("SELECT count() FROM dead_letters FINAL")[1] == [(3,)]
        assert sink.query("SELECT hex(value) FROM dead_letters FINAL WHERE offset = 5 AND partition = 1")[1] == [
            ("FFFE2062696E617279",)
        ]
        # what failed and why, through the read-only client (invalid UTF-8 must not break its JSON)
        rows = reader.query(
            "SELECT topic, partition, offset, error, value FROM dead_letters FINAL ORDER BY partition, offset"
        ).rows
        assert [r[:4] for r in rows] == [
            ["tweets", 0, 5, "value is not JSON"],
            ["tweets", 1, 5, "value is not JSON"],
            ["tweets", 1, 6, "value is not JSON"],
        ]
        assert rows[1][4].endswith(" binary") and rows[2][4] is None  # bad bytes shown as U+FFFD, not an error
    finally:
        reader.close()
        sink.close()
