"""Trends on the real engine: the rollup follows emotion_scores, re-delivery changes no number, and
`emostream trends` prints shares, finds spikes and draws the chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas import LABELS, EmotionScore
from schemas.settings import Settings
from stream.sink import ClickHouseSink
from stream.sql import ReadOnlySql
from stream.trends import Trends, TrendsError, parse_duration, shares_statement
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
    from schemas import DeadLetter, ReviewItem, ReviewLabel, Tweet

    start = datetime.now(UTC) - timedelta(minutes=45)
    scores = stream_of_scores(600, start)
    reviews = [ReviewItem(tweet=Tweet(id=s.tweet_id, text="t"), score=s, reason="r") for s in scores[:20]]
    sink.write(scores, [DeadLetter(topic="tweets", partition=0, offset=1, value=b"x", error="e")], reviews)
    label = ReviewLabel(tweet_id="-", label="joy", reviewer="ana", model_version="v1", confidence=0.5)
    sink.write_labels([label.model_copy(update={"tweet_id": s.tweet_id}) for s in scores[:5]])
    sink.close()
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.DOTALL)
    statements = [s.strip() for block in blocks for s in block.split(";") if "SELECT" in s]
    assert len(statements) >= 7
    reader = ReadOnlySql(settings)
    try:
        for statement in statements:
            assert reader.query(statement).rows, statement
    finally:
        reader.close()
