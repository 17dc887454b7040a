"""Trends on the real engine: the rollup follows emotion_scores, re-delivery changes no number, and
`emostream trends` prints shares, finds spikes and draws the chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emostream.schemas import LABELS, EmotionScore
from emostream.settings import Settings
from emostream.stream.clickhouse.ddl import DDL_DIR
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.clickhouse.sql import ReadOnlySql
from emostream.stream.clickhouse.trends import Trends, TrendsError, parse_duration, shares_statement
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"
ROLLUP = (
    "SELECT brand, minute, model_version, label, sum(tweets), "
    + ", ".join(f"round(sum({name}), 6)" for name in LABELS)
    + " FROM emotion_trends_minute GROUP BY ALL ORDER BY ALL"
)
FROM_ROWS = (
    "SELECT brand, toStartOfMinute(created_at) AS minute, model_version, label, count(), "
    + ", ".join(f"round(sum({name}), 6)" for name in LABELS)
    + " FROM emotion_scores FINAL GROUP BY ALL ORDER BY ALL"
)
SUMS = ", ".join(f"sum({name})" for name in LABELS)
# Each tweet once, its newest version's row: from the rollup, and from the raw rows through the view.
ROLLUP_PER_GROUP = (
    f"SELECT brand, minute, model_version, label, sum(tweets), {SUMS} FROM emotion_trends_minute "
    "GROUP BY ALL HAVING sum(tweets) > 0 ORDER BY ALL"
)
LATEST_PER_GROUP = (
    f"SELECT brand, toStartOfMinute(created_at) AS minute, model_version, label, count(), {SUMS} "
    "FROM emotion_scores_latest GROUP BY ALL ORDER BY ALL"
)
ROLLUP_PER_LABEL = (
    "SELECT brand, label, sum(tweets) AS n, "
    + ", ".join(f"sum({name}) / n" for name in LABELS)
    + " FROM emotion_trends_minute GROUP BY brand, label HAVING n > 0 ORDER BY ALL"
)
LATEST_PER_LABEL = (
    "SELECT brand, label, count() AS n, "
    + ", ".join(f"avg({name})" for name in LABELS)
    + " FROM emotion_scores_latest GROUP BY brand, label ORDER BY ALL"
)


def stream_of_scores(n: int, start: datetime, seed: int = 0, version: str = "v0001") -> list[EmotionScore]:
    """Tweets spread over minutes and brands with random probabilities; minute 30 is a burst of anger."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        minute = i % 40
        probabilities = rng.dirichlet(np.ones(6))
        if minute == 30:
            probabilities = np.array([0.02, 0.02, 0.02, 0.9, 0.02, 0.02])
        top = int(probabilities.argmax())
        rows.append(
            EmotionScore(
                tweet_id=f"t{i:05d}",
                brand=("acme", "globex")[i % 2],
                created_at=start + timedelta(minutes=minute, seconds=i % 60),
                scored_at=datetime.now(UTC),
                model_version=version,
                label=LABELS[top],
                confidence=float(probabilities[top]),
                margin=float(np.sort(probabilities)[-1] - np.sort(probabilities)[-2]),
                **{name: float(p) for name, p in zip(LABELS, probabilities, strict=True)},
            )
        )
    return rows


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_the_rollup_matches_the_rows_and_redelivery_changes_no_number(home: Path) -> None:
    sink = ClickHouseSink(Settings(home=home).resolved_clickhouse_dsn())
    try:
        sink.apply_schema()
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=45)
        scores = stream_of_scores(1200, start)
        sink.write(scores[:800])
        before = sink.query(ROLLUP)[1]
        sink.write(scores[300:800])  # a crash re-delivers the tail of what was written
        assert sink.query(ROLLUP)[1] == before
        sink.write(scores[700:])  # and the stream goes on, overlapping
        after = sink.query(ROLLUP)[1]
        assert after == sink.query(FROM_ROWS)[1]
        assert sum(row[4] for row in after) == 1200
    finally:
        sink.close()


def same_numbers(sink: ClickHouseSink, rollup: str, rows: str) -> None:
    """The two statements give the same groups and counts, and the same sums up to float rounding."""
    ours, theirs = sink.query(rollup)[1], sink.query(rows)[1]
    assert [row[:-6] for row in ours] == [row[:-6] for row in theirs]
    assert [x for row in ours for x in row[-6:]] == pytest.approx([x for row in theirs for x in row[-6:]], abs=1e-9)


def rebuild_statements() -> list[str]:
    """The rebuild recipe in the comments of 005_newest_version.sql, as statements."""
    lines = (DDL_DIR / "005_newest_version.sql").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-- Rebuild the rollup"))
    statements: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("--   "):
            if statements:
                break
            continue  # the rest of the paragraph that introduces it
        if line.startswith("--     "):
            statements[-1] += " " + line.removeprefix("--").strip()
        else:
            statements.append(line.removeprefix("--").strip())
    assert [s.split()[0] for s in statements] == ["TRUNCATE", "TRUNCATE", "INSERT", "INSERT"], statements
    return statements


def test_a_tweet_scored_by_two_versions_counts_once_as_its_newest(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=home)
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    reader = ReadOnlySql(settings.query_clickhouse(), settings)
    try:
        sink.apply_schema()
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=45)
        sink.write(stream_of_scores(600, start))
        swapped = stream_of_scores(600, start, seed=1, version="v0002")[100:300]  # other labels, same tweets
        sink.write(swapped)
        before = sink.query(ROLLUP)[1]
        sink.write(swapped[50:])  # re-delivered after a crash
        assert sink.query(ROLLUP)[1] == before
        sink.write(stream_of_scores(700, start, seed=2, version="v0002")[600:])  # new tweets, first seen by v0002
        lagging = stream_of_scores(700, start, seed=3)[150:650]  # a worker still on v0001
        sink.write(lagging)  # t00150-t00599 already have their v0001 row: only t00600-t00649 are new
        assert sink.query("SELECT count() FROM emotion_scores WHERE model_version = 'v0001'")[1] == [(650,)]
        twice = stream_of_scores(20, start, seed=4, version="v0003")
        sink.write(twice + twice[:5] + stream_of_scores(20, start, seed=5, version="v0004")[15:])  # one batch
        same_numbers(sink, ROLLUP_PER_GROUP, LATEST_PER_GROUP)

        real_insert = sink._insert

        def crash_before_superseded(table: str, *args: object) -> None:
            if table == "emotion_superseded":
                raise ConnectionError("the worker died between the two inserts")
            real_insert(table, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(sink, "_insert", crash_before_superseded)
        newer = stream_of_scores(600, start, seed=6, version="v0010")[250:350]
        with pytest.raises(ConnectionError):
            sink.write(newer)
        ((counted, tweets),) = sink.query(
            "SELECT (SELECT sum(tweets) FROM emotion_trends_minute), uniqExact(tweet_id) FROM emotion_scores"
        )[1]
        assert (counted, tweets) == (700 + 100, 700)  # counted twice until the batch comes back
        monkeypatch.undo()
        sink.write(newer)  # its offsets were not committed: re-delivered, and repaired
        same_numbers(sink, ROLLUP_PER_GROUP, LATEST_PER_GROUP)
        same_numbers(sink, ROLLUP_PER_LABEL, LATEST_PER_LABEL)
        ((counted, tweets),) = sink.query(
            "SELECT (SELECT sum(tweets) FROM emotion_trends_minute), uniqExact(tweet_id) FROM emotion_scores"
        )[1]
        assert counted == tweets == 700
        assert sink.query("SELECT count() FROM emotion_scores_latest WHERE model_version = 'v0010'")[1] == [(100,)]

        # what `emostream trends` and the trends page read, through the read-only client
        trends = Trends.load(reader.query, "minute", 3 * 3600)
        per_minute = sink.query(
            "SELECT toStartOfMinute(created_at) AS m, count() FROM emotion_scores_latest GROUP BY m ORDER BY m"
        )[1]
        assert [(t.to_pydatetime(), int(n)) for t, n in trends.tweets.items()] == per_minute
        assert np.allclose(trends.shares.sum(axis=1), 1.0)
        assert reader.query("SELECT count(), uniqExact(tweet_id) FROM emotion_scores_latest").rows == [[700, 700]]

        # the rebuild in the DDL's comments gives the same rollup
        grouped = sink.query(ROLLUP_PER_GROUP)[1]
        for statement in rebuild_statements():
            sink.client.command(statement)
        same_numbers(sink, ROLLUP_PER_GROUP, LATEST_PER_GROUP)
        assert [row[:5] for row in sink.query(ROLLUP_PER_GROUP)[1]] == [row[:5] for row in grouped]
    finally:
        reader.close()
        sink.close()


def test_trends_command_prints_shares_spikes_and_a_chart(home: Path, tmp_path: Path) -> None:
    sink = ClickHouseSink(Settings(home=home).resolved_clickhouse_dsn())
    sink.apply_schema()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=45)
    sink.write(stream_of_scores(2400, start))
    sink.close()
    chart = tmp_path / "trends.png"
    result = run_cli(
        "trends", "--by", "minute", "--since", "2h", "--brand", "acme", "--spikes", "--plot", chart,
        env={"EMOSTREAM_HOME": str(home)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Emotion shares (%) per minute, brand acme" in result.stdout
    burst = (start + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
    spike_lines = [line for line in result.stdout.splitlines() if burst in line and "anger" in line]
    assert spike_lines, result.stdout  # the burst of anger is found as a spike
    assert chart.stat().st_size > 10_000
    bad = run_cli("trends", "--since", "yesterday", env={"EMOSTREAM_HOME": str(home)})
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_spikes_use_only_the_trailing_buckets() -> None:
    index = pd.date_range("2026-11-01", periods=20, freq="h")
    shares = pd.DataFrame({label: 0.1 for label in LABELS}, index=index)
    shares["joy"] = 0.5 + 0.01 * np.sin(np.arange(20))
    shares.loc[index[15], "anger"] = 0.4
    trends = Trends(shares, pd.Series(100, index=index))
    found = trends.spikes(k=3, window=6)
    assert list(zip(found["bucket"], found["label"], strict=True)) == [(index[15], "anger")]
    assert trends.spikes(k=3, window=16, min_periods=16).empty  # not enough history before the burst


def test_arguments_are_checked_and_quoted() -> None:
    assert parse_duration("90m") == 5400 and parse_duration("1.5h") == 5400 and parse_duration("7d") == 604800
    with pytest.raises(TrendsError, match="--since"):
        parse_duration("24 hours")
    with pytest.raises(TrendsError, match="--by"):
        shares_statement("week", 60)  # type: ignore[arg-type]
    assert "brand = 'o\\'brien'" in shares_statement("hour", 60, "o'brien")


def test_the_readme_gallery_runs(home: Path) -> None:
    """Every SQL block in the README runs, read-only, on a populated database and returns rows."""
    settings = Settings(home=home)
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    sink.apply_schema()
    from emostream.schemas import DeadLetter, ReviewItem, ReviewLabel, Tweet

    start = datetime.now(UTC) - timedelta(minutes=45)
    scores = stream_of_scores(600, start)
    reviews = [ReviewItem(tweet=Tweet(id=s.tweet_id, text="t"), score=s, reason="r") for s in scores[:20]]
    sink.write(scores, [DeadLetter(topic="tweets", partition=0, offset=1, value=b"x", error="e")], reviews)
    sink.write(stream_of_scores(600, start, seed=1, version="v0002")[:100])  # a model swap re-scored some
    label = ReviewLabel(tweet_id="-", label="joy", reviewer="ana", model_version="v1", confidence=0.5)
    sink.write_labels([label.model_copy(update={"tweet_id": s.tweet_id}) for s in scores[:5]])
    # a gold question and an answer to it (the team's queries)
    sink.client.command("INSERT INTO review_gold (tweet_id, text, gold_label) VALUES ('gold-1', 'g', 'joy')")
    sink.client.command(
        "INSERT INTO review_labels (tweet_id, label, reviewer, labelled_at, model_version, confidence, text_sha256) "
        "VALUES ('gold-1', 'joy', 'ana', now64(3), 'v1', 0.5, lower(hex(SHA256('g'))))"
    )
    sink.close()
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.DOTALL)
    statements = [s.strip() for block in blocks for s in block.split(";") if "SELECT" in s]
    assert len(statements) >= 7
    reader = ReadOnlySql(settings.query_clickhouse(), settings)
    try:
        for statement in statements:
            assert reader.query(statement).rows, statement
    finally:
        reader.close()
