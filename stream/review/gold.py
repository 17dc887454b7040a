"""Gold questions: tweets with known labels, mixed into each reviewer's queue to measure their accuracy.

Why: agreement says how far reviewers agree with each other, not whether they are right; two careless
reviewers can agree. A reviewer's answers on tweets whose label is known say how often *they* are right,
and retraining weighs their labels by it (``review_gold_accuracy.weight`` in
``deploy/clickhouse/006_review_team.sql``: their accuracy once they answered :data:`GOLD_MIN_ANSWERS`).

Indistinguishable on the page: a gold item is served with the same fields as any item, with the scores
the model gives its text (computed when the operator loads it), a reason of the same form, leased,
skipped and undone like any item, and its answer is an ordinary label event (``review_labels`` and
``tweets.labels``). What tells them apart is only ``review_gold``, which the page never reads.

The mix (:func:`mix_gold`): each free slot of a reviewer's window (one not held by an item already on
their screen) is a gold question with probability ``EMOSTREAM_REVIEW_GOLD_RATE``, placed at a random
position among the new items; items already on the screen keep their places. So a share of about that
rate of what each reviewer is shown is gold, while they have questions left. A reviewer answers each gold
question once.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from emostream.schemas import LABELS, NO_EMOTION
from emostream.schemas.messages import TWEET_ID_MAX_CHARS

GOLD_MIN_ANSWERS = 5  # gold answers before a reviewer's accuracy weighs their labels (the SQL view's 5)
GOLD_COLUMNS = (
    "tweet_id",
    "brand",
    "created_at",
    "text",
    "model_version",
    "label",
    "confidence",
    "margin",
    *LABELS,
    "reason",
    "gold_label",
    "added_at",
)
T = TypeVar("T")


class GoldError(ValueError):
    """A gold file that cannot be used, with the line that is wrong."""


@dataclass(frozen=True)
class GoldQuestion:
    """A tweet and its known label, as the operator's file gives it."""

    tweet_id: str
    text: str
    label: str  # one of LABELS, or "none"
    brand: str = ""


def read_gold(path: Path) -> list[GoldQuestion]:
    """A CSV or TSV (by its suffix) with a header: ``text``, ``label``, and optionally ``id``/``tweet_id`` and
    ``brand``. Without an id, one is made from the row's position (``gold-<n>``). Every row is checked."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldError(f"{path}: cannot read the gold questions ({exc})") from None
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    columns = set(reader.fieldnames or ())
    if not {"text", "label"} <= columns:
        raise GoldError(f"{path}:1: expected a text and a label column (and optionally id or tweet_id, brand)")
    id_column = next((c for c in ("tweet_id", "id") if c in columns), None)
    questions, seen = [], set()
    for line, row in enumerate(reader, start=2):
        label = (row.get("label") or "").strip()
        if label not in (*LABELS, NO_EMOTION):
            raise GoldError(f"{path}:{line}: label: {label!r} is not one of {', '.join(LABELS)} or {NO_EMOTION}")
        body = row.get("text") or ""
        if not body.strip():
            raise GoldError(f"{path}:{line}: text must not be empty")
        tweet_id = ((row.get(id_column) or "") if id_column else "").strip() or f"gold-{line - 1}"
        if len(tweet_id) > TWEET_ID_MAX_CHARS:
            raise GoldError(f"{path}:{line}: id: at most {TWEET_ID_MAX_CHARS} characters")
        if (tweet_id, body) in seen:
            continue
        seen.add((tweet_id, body))
        questions.append(GoldQuestion(tweet_id, body, label, (row.get("brand") or "").strip()))
    if not questions:
        raise GoldError(f"{path}: no gold questions in it")
    return questions


def gold_rows(
    questions: Sequence[GoldQuestion],
    probabilities: Sequence[Sequence[float]],
    model_version: str,
    threshold: float,
    now: datetime | None = None,
) -> list[list[object]]:
    """Rows of ``review_gold`` (:data:`GOLD_COLUMNS`): each question with the model's scores of its text and a
    reason of the form the worker writes (``confidence 0.41 < 0.60``), so nothing on the page tells it apart."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    rows: list[list[object]] = []
    for question, scores in zip(questions, probabilities, strict=True):
        ranked = sorted(range(len(LABELS)), key=lambda i: -scores[i])
        top, second = float(scores[ranked[0]]), float(scores[ranked[1]])
        reason = f"confidence {top:.2f} < {threshold:.2f}"
        rows.append(
            [
                question.tweet_id,
                question.brand,
                now,
                question.text,
                model_version,
                LABELS[ranked[0]],
                top,
                top - second,
                *(float(p) for p in scores),
                reason,
                question.label,
                now,
            ]
        )
    return rows


def gold_draws(free_slots: int, rate: float, rng: random.Random) -> int:
    """How many of a window's ``free_slots`` (those not held by items already on the screen) are gold
    questions: each one with probability ``rate``, whether or not the queue has an item for it."""
    return sum(rng.random() < rate for _ in range(free_slots))


def mix_gold(held: Sequence[T], new: Sequence[T], gold: Sequence[T], limit: int, rng: random.Random) -> list[T]:
    """A window of at most ``limit`` items: those already on the screen first (``held``, in their order), then
    every one of the ``gold`` questions at random positions among as many ``new`` items as there is room for."""
    fresh = list(new[: max(0, limit - len(held) - len(gold))])
    for question in gold:
        fresh.insert(rng.randint(0, len(fresh)), question)
    return [*held, *fresh][:limit]
