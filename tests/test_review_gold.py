"""Gold questions without a server: the operator's file checked row by row, rows that look like any item,
and the mix that puts them in a reviewer's window."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from emostream.schemas import LABELS
from emostream.stream.review.gold import (
    GOLD_COLUMNS,
    GoldError,
    GoldQuestion,
    gold_draws,
    gold_rows,
    mix_gold,
    read_gold,
)


def write(tmp_path: Path, text: str, name: str = "gold.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_gold_file_is_read_with_or_without_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'id,text,label,brand\n7,"so happy, really",joy,acme\n8,scared,fear,\n7,"so happy, really",joy,acme\n'
    )
    assert read_gold(path) == [
        GoldQuestion("7", "so happy, really", "joy", "acme"),
        GoldQuestion("8", "scared", "fear"),
    ]
    tsv = write(tmp_path, "text\tlabel\nsad day\tsadness\nnothing\tnone\n", "gold.tsv")
    assert [(q.tweet_id, q.label) for q in read_gold(tsv)] == [("gold-1", "sadness"), ("gold-2", "none")]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("id,label\n1,joy\n", "expected a text and a label column"),
        ("text,label\nhello,boredom\n", ":2: label: 'boredom' is not one of"),
        ("text,label\nhello,joy\n  ,joy\n", ":3: text must not be empty"),
        ("id,text,label\n" + "x" * 513 + ",hi,joy\n", ":2: id: at most 512 characters"),
        ("text,label\n", "no gold questions"),
    ],
)
def test_a_bad_gold_file_is_refused_with_the_line(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(GoldError, match=re.escape(error)):
        read_gold(write(tmp_path, text))


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gold.csv"
    path.write_bytes(b"text,label\n\xff\xfe,joy\n")
    with pytest.raises(GoldError, match="cannot read"):
        read_gold(path)


def test_gold_rows_carry_the_models_scores_and_a_reason_of_the_workers_form() -> None:
    scores = [0.1, 0.55, 0.2, 0.05, 0.05, 0.05]
    (row,) = gold_rows([GoldQuestion("g", "t", "love")], [scores], "v0003", 0.6)
    values = dict(zip(GOLD_COLUMNS, row, strict=True))
    assert values["label"] == "joy" and values["gold_label"] == "love"  # the model's label, and the known one
    assert values["confidence"] == 0.55 and values["margin"] == pytest.approx(0.35)
    assert [values[name] for name in LABELS] == scores and values["model_version"] == "v0003"
    assert values["reason"] == "confidence 0.55 < 0.60"


def test_the_share_of_gold_is_the_rate() -> None:
    rng = random.Random(7)
    drawn = sum(gold_draws(10, 0.2, rng) for _ in range(2000))
    assert 0.18 < drawn / 20_000 < 0.22
    assert gold_draws(10, 0.0, rng) == 0 and gold_draws(10, 1.0, rng) == 10


def test_the_mix_keeps_what_is_on_screen_in_place_and_every_gold_question_in_the_window() -> None:
    rng = random.Random(3)
    held, new, gold = ["h1", "h2"], [f"n{i}" for i in range(10)], ["g1", "g2", "g3"]
    for _ in range(50):
        window = mix_gold(held, new, gold, 10, rng)
        assert window[:2] == held and len(window) == 10 and set(gold) <= set(window)
        assert [item for item in window if item.startswith("n")] == new[:5]  # the queue's order, its first
    positions = {mix_gold([], new, ["g"], 10, random.Random(seed)).index("g") for seed in range(200)}
    assert len(positions) == 10  # anywhere in the window: its place gives nothing away
