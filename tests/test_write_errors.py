"""Write errors on the real engine (chDB): rows ClickHouse refuses become dead letters; outages are raised."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from emostream.schemas import LABELS, DeadLetter, EmotionScore, ReviewItem, Tweet
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.worker.records import RawRecord
from emostream.stream.worker.write_errors import Rows, TableRefusesRows, is_data_error, write_isolating

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ClickHouseSink]:
    sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}")
    sink.apply_schema()
    yield sink
    sink.close()


def rows(n: int, created: datetime | None = None, review: set[int] | None = None) -> Rows:
    at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    scores = [
        EmotionScore(
            tweet_id=f"w{i}",
            created_at=created if created is not None and i == 3 else at,
            scored_at=at,
            model_version="v0001",
            label="joy",
            confidence=0.4,
            margin=0.1,
            **{name: 0.3 if name == "joy" else 0.14 for name in LABELS},
        )
        for i in range(n)
    ]
    sources = [RawRecord("tweets", 2, 100 + i, f"w{i}".encode(), f'{{"id": "w{i}"}}'.encode()) for i in range(n)]
    reviews = [
        ReviewItem(tweet=Tweet(id=s.tweet_id, text=f"text {i}"), score=s, reason="confidence 0.40 < 0.60")
        for i, s in enumerate(scores)
        if review is None or i in review
    ]
    earlier = [DeadLetter.of("tweets", 2, 99, None, b"not json", "value is not JSON")]
    return Rows(scores, sources, reviews, earlier)


def stored(sink: ClickHouseSink, sql: str) -> list:
    return [row[0] if len(row) == 1 else row for row in sink.query(sql)[1]]


def test_a_row_clickhouse_refuses_is_a_dead_letter_and_the_rest_are_written(sink: ClickHouseSink) -> None:
    sink.client.command("ALTER TABLE emotion_scores ADD CONSTRAINT no_w5 CHECK tweet_id != 'w5'")
    written = write_isolating(sink, rows(12))
    assert stored(sink, "SELECT tweet_id FROM emotion_scores ORDER BY tweet_id") == sorted(
        f"w{i}" for i in range(12) if i != 5
    )
    assert [s.tweet_id for s in written.scores] == [f"w{i}" for i in range(12) if i != 5]
    assert {r.tweet.id for r in written.reviews} == {f"w{i}" for i in range(12) if i != 5}
    (refused,) = written.refused
    assert (refused.partition, refused.offset, refused.value) == (2, 105, b'{"id": "w5"}')
    assert refused.error.startswith("ClickHouse refused the row: DatabaseError: Code: 469.")
    assert "VIOLATED_CONSTRAINT" in refused.error
    letters = stored(sink, "SELECT offset, error FROM dead_letters FINAL ORDER BY offset")
    assert [offset for offset, _ in letters] == [99, 105]  # the batch's own dead letter, and the refused row
    assert "no_w5" in letters[1][1]
    assert stored(sink, "SELECT count() FROM review_queue FINAL WHERE tweet_id = 'w5'") == [0]


def test_a_value_the_client_cannot_serialize_is_a_dead_letter(sink: ClickHouseSink) -> None:
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))  # year 0 in UTC: no DateTime64 holds it
    written = write_isolating(sink, rows(6, created=year_one))
    assert [letter.offset for letter in written.refused] == [103]
    assert "ValueError" in written.refused[0].error or "OverflowError" in written.refused[0].error
    assert stored(sink, "SELECT count() FROM emotion_scores") == [5]


def test_an_outage_is_raised_for_the_caller_to_retry_and_nothing_is_dead_lettered(sink: ClickHouseSink) -> None:
    sink.client.command("INSERT INTO emotion_scores (tweet_id, model_version) VALUES ('seed', 'v0000')")
    sink.client.command("ALTER TABLE emotion_scores MODIFY SETTING parts_to_throw_insert = 1")  # TOO_MANY_PARTS
    with pytest.raises(DatabaseError, match="TOO_MANY_PARTS"):
        write_isolating(sink, rows(4))
    assert stored(sink, "SELECT count() FROM dead_letters") == [0]
    sink.client.command("ALTER TABLE emotion_scores MODIFY SETTING parts_to_throw_insert = 3000")
    written = write_isolating(sink, rows(4))  # the retry, once the table takes inserts again
    assert len(written.scores) == 4 and not written.refused


def test_every_row_refused_is_the_tables_problem_not_the_rows(sink: ClickHouseSink) -> None:
    sink.client.command("ALTER TABLE emotion_scores ADD CONSTRAINT none CHECK length(tweet_id) > 100")
    with pytest.raises(TableRefusesRows, match="every one of 5 rows"):
        write_isolating(sink, rows(5))
    assert stored(sink, "SELECT offset FROM dead_letters FINAL") == [99]  # only the record that was a dead letter


def test_a_refused_review_item_leaves_its_written_score_as_the_records_one_outcome(sink: ClickHouseSink) -> None:
    sink.client.command("ALTER TABLE review_queue ADD CONSTRAINT no_text_2 CHECK text != 'text 2'")
    written = write_isolating(sink, rows(4))
    assert stored(sink, "SELECT tweet_id FROM emotion_scores ORDER BY tweet_id") == ["w0", "w1", "w2", "w3"]
    assert written.refused == [] and [s.tweet_id for s in written.scores] == ["w0", "w1", "w2", "w3"]
    assert stored(sink, "SELECT offset FROM dead_letters FINAL") == [99]


@pytest.mark.parametrize(
    ("error", "data"),
    [
        (DatabaseError("Code: 469. DB::Exception: Constraint `c` is violated. (VIOLATED_CONSTRAINT)"), True),
        (DatabaseError("Code: 6. DB::Exception: Cannot parse string 'x' as UInt32. (CANNOT_PARSE_TEXT)"), True),
        (ValueError("year 0 is out of range"), True),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
        (DatabaseError("Code: 252. DB::Exception: Too many parts. (TOO_MANY_PARTS)"), False),
        (DatabaseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB. (NOT_ENOUGH_SPACE)"), False),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)"), False),
        (DatabaseError("Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)"), False),
        (OperationalError("Error HTTPConnectionPool: Connection refused"), False),
        (ConnectionResetError("reset by peer"), False),
        (TimeoutError(), False),
        (RuntimeError("Cannot lock file /data/status"), False),
        (DatabaseError("HTTP 503 Service Unavailable"), False),
    ],
)
def test_which_errors_are_about_the_rows(error: Exception, data: bool) -> None:
    assert is_data_error(error) is data
