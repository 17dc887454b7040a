"""The ClickHouse sink on the real engine (chDB through clickhouse-connect)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import EmotionScore
from stream.sink import DDL_DIR, ClickHouseSink, ddl_statements

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


def test_ddl_files_parse_into_create_statements() -> None:
    statements = ddl_statements()
    assert statements and all(
        s.startswith(("CREATE TABLE IF NOT EXISTS", "CREATE MATERIALIZED VIEW IF NOT EXISTS")) for s in statements
    )


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
    from schemas import DeadLetter
    from schemas.settings import Settings
    from stream.sql import ReadOnlySql

    letters = [
        DeadLetter(topic="tweets", partition=p, offset=o, key=b"k", value=v, error="value is not JSON")
        for p, o, v in ((0, 5, b"not json"), (1, 5, b"\xff\xfe binary"), (1, 6, None))
    ]
    assert letters[1].source_key == b"tweets/1/5"
    settings = Settings(home=tmp_path)
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    reader = ReadOnlySql(settings)
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
