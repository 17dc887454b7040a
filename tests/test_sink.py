"""The ClickHouse sink on the real engine (chDB through clickhouse-connect)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import EmotionScore
from stream.sink import ClickHouseSink, ddl_statements

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
        assert total == 170
        rows = sink.query(
            "SELECT model_version, count(), uniqExact(tweet_id) FROM emotion_scores FINAL "
            "GROUP BY model_version ORDER BY model_version"
        )[1]
        assert rows == [("v0001", 100, 100), ("v0002", 10, 10)]
        ((created,),) = sink.query("SELECT min(created_at) FROM emotion_scores")[1]
        assert created.replace(tzinfo=UTC) == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    finally:
        sink.close()


def test_only_read_only_sql_is_answered(tmp_path: Path) -> None:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    try:
        sink.apply_schema()
        for statement in ("DROP TABLE emotion_scores", "INSERT INTO emotion_scores (tweet_id) VALUES ('x')"):
            with pytest.raises(ValueError, match="read-only"):
                sink.query(statement)
        assert sink.query("WITH 1 AS x SELECT x")[1] == [(1,)]
    finally:
        sink.close()


def test_ddl_files_parse_into_create_statements() -> None:
    statements = ddl_statements()
    assert statements and all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in statements)
