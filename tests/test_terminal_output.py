"""Strings from the database reach the terminal as text: no markup read, no control character acted on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emostream.console import literal, out, table
from emostream.schemas import LABELS, EmotionScore
from emostream.schemas.text import escape_control
from emostream.stream.clickhouse.sink import ClickHouseSink
from tests.conftest import run_cli

pytestmark = pytest.mark.integration
HOSTILE_BRANDS = [
    "[link=https://evil.example]click[/link]",
    "[/brand]",
    "\x1b[2J\x1b]0;owned\x07clear",  # clear the screen, set the window title
    "a\u2028b\x85c\x9b31m",  # a line separator, NEL, a C1 CSI
]


@pytest.fixture
def hostile_dsn(tmp_path: Path) -> str:
    dsn = f"chdb://{tmp_path / 'ch'}"
    sink = ClickHouseSink(dsn)
    sink.apply_schema()
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    sink.write(
        [
            EmotionScore(
                tweet_id=f"h{i}",
                brand=brand,
                created_at=now,
                scored_at=now,
                model_version="v0001",
                label="joy",
                confidence=0.9,
                margin=0.8,
                **{name: 0.9 if name == "joy" else 0.02 for name in LABELS},
            )
            for i, brand in enumerate(HOSTILE_BRANDS)
        ]
    )
    sink.close()
    return dsn


def assert_no_control(text: str) -> None:
    assert not any((ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in text)


def test_sql_prints_database_strings_literally(hostile_dsn: str) -> None:
    result = run_cli("sql", "SELECT brand FROM emotion_scores ORDER BY tweet_id", "--clickhouse-dsn", hostile_dsn)
    assert result.returncode == 0, result.stderr
    assert "[link=https://evil.example]click[/link]" in result.stdout and "[/brand]" in result.stdout
    assert "\\x1b[2J\\x1b]0;owned\\x07clear" in result.stdout and "a\\u2028b\\x85c\\x9b31m" in result.stdout
    assert_no_control(result.stdout)


def test_trends_prints_a_hostile_brand_literally(hostile_dsn: str) -> None:
    for brand in HOSTILE_BRANDS:
        result = run_cli("trends", "--brand", brand, "--since", "1h", "--clickhouse-dsn", hostile_dsn)
        assert result.returncode == 0, result.stderr
        assert escape_control(brand) in result.stdout
        assert_no_control(result.stdout)


def test_an_error_quoting_the_statement_is_one_literal_line_not_markup(hostile_dsn: str) -> None:
    result = run_cli("sql", "SELECT '[/x] \x1b[31m' + 1", "--clickhouse-dsn", hostile_dsn)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ClickHouse: ") and "MarkupError" not in result.stderr
    assert "[/x] \\x1b[31m" in result.stderr
    assert_no_control(result.stderr.rstrip("\n"))


def test_the_consoles_never_read_markup_in_strings(capsys: pytest.CaptureFixture[str]) -> None:
    out.print("[bold]not bold[/bold] [/x]", "\x1b[31m")
    out.print(table("[red]t[/red]", ["[/c]"], [["[link=x]y[/link]", None]], raw=True))
    printed = capsys.readouterr().out
    assert "[bold]not bold[/bold] [/x] \\x1b[31m" in printed
    assert "[red]t[/red]" in printed and "[/c]" in printed and "[link=x]y[/link]" in printed
    assert literal("tab\there\nline").plain == "tab\there\nline"
    assert literal("tab\there\nline", newlines=False).plain == "tab\\there\\nline"
