"""The review queue in ClickHouse: pending items, counts, and the labels people gave.

Trusted SQL written here, with every user-supplied value (filters, ids) bound as a query parameter,
never formatted into the text. Blocking calls: the service runs them on a thread of its own.

"Pending" means: in ``review_queue`` and without a current label, where a tweet's current label is its
latest ``review_labels`` event unless that event is a retraction (an undo).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import LABELS, ReviewLabel
from stream.sink import ClickHouseSink

LABELLED = "SELECT tweet_id FROM review_labels GROUP BY tweet_id HAVING NOT argMax(retracted, labelled_at)"
CURRENT_LABELS = (
    "SELECT tweet_id, argMax(label, labelled_at) AS label, argMax(reviewer, labelled_at) AS reviewer, "
    "argMax(retracted, labelled_at) AS retracted, max(labelled_at) AS last_labelled_at "
    "FROM review_labels GROUP BY tweet_id"
)
# The training file: the current label of each labelled tweet, "none" (no emotion fits) left out.
TRAINING_LABELS_WITH_IDS = f"""
SELECT tweet_id, q.text AS text, l.label AS label
FROM ({CURRENT_LABELS}) AS l
INNER JOIN (SELECT tweet_id, argMax(text, queued_at) AS text FROM review_queue GROUP BY tweet_id) AS q USING tweet_id
WHERE NOT l.retracted AND l.label != 'none'
ORDER BY tweet_id
"""
TRAINING_LABELS = f"SELECT text, label FROM ({TRAINING_LABELS_WITH_IDS})"
ITEM_COLUMNS = (
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
)
# The queue's order: the most uncertain first (lowest margin), with the random sample of confident
# tweets (reason "sample: ...", see stream.review_policy) interleaved in proportion to its share, in
# a fixed pseudo-random order: sorted last by margin, a sampled tweet would never come up in a long
# queue, and the confident errors it exists to catch would never reach anyone.
PENDING = f"""
SELECT {", ".join(ITEM_COLUMNS)}
FROM (
    SELECT *, startsWith(reason, 'sample:') AS sampled,
           row_number() OVER (PARTITION BY sampled ORDER BY
               if(sampled, cityHash64(tweet_id) / 18446744073709551616.0, toFloat64(margin)), queued_at, tweet_id)
           / count() OVER (PARTITION BY sampled) AS position
    FROM review_queue FINAL
    WHERE tweet_id NOT IN ({LABELLED})
      AND tweet_id NOT IN {{exclude:Array(String)}}
      AND ({{brand:String}} = '' OR brand = {{brand:String}})
      AND ({{label:String}} = '' OR label = {{label:String}})
)
ORDER BY has({{mine:Array(String)}}, tweet_id) DESC, position, margin, tweet_id
LIMIT {{limit:UInt32}}
"""
PENDING_COUNT = f"SELECT count() FROM review_queue FINAL WHERE tweet_id NOT IN ({LABELLED})"
PENDING_BY_FACET = f"""
SELECT brand, label, count() FROM review_queue FINAL
WHERE tweet_id NOT IN ({LABELLED}) GROUP BY brand, label
"""
DONE = f"SELECT count(), countIf(reviewer = {{reviewer:String}}) FROM ({CURRENT_LABELS}) WHERE NOT retracted"


@dataclass(frozen=True)
class QueueItem:
    tweet_id: str
    brand: str
    created_at: datetime
    text: str
    model_version: str
    label: str  # the model's
    confidence: float
    margin: float
    probabilities: dict[str, float]
    reason: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> QueueItem:
        values = dict(zip(ITEM_COLUMNS, row, strict=True))
        return cls(
            tweet_id=values["tweet_id"],
            brand=values["brand"],
            created_at=values["created_at"],
            text=values["text"],
            model_version=values["model_version"],
            label=values["label"],
            confidence=float(values["confidence"]),
            margin=float(values["margin"]),
            probabilities={name: float(values[name]) for name in LABELS},
            reason=values["reason"],
        )

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


@dataclass
class Counts:
    """Pending items per (brand, model label), and labelled tweets in all and by one reviewer."""

    pending: dict[tuple[str, str], int] = field(default_factory=dict)
    done: int = 0
    done_by_reviewer: int = 0

    def as_json(self, brand: str = "", label: str = "") -> dict[str, Any]:
        brands: dict[str, int] = {}
        labels: dict[str, int] = {}
        for (b, lab), n in self.pending.items():
            brands[b] = brands.get(b, 0) + n
            labels[lab] = labels.get(lab, 0) + n
        matching = sum(n for (b, lab), n in self.pending.items() if brand in ("", b) and label in ("", lab))
        return {
            "pending": matching,
            "pending_all": sum(self.pending.values()),
            "done": self.done,
            "done_by_you": self.done_by_reviewer,
            "brands": dict(sorted(brands.items())),
            "labels": {name: labels[name] for name in LABELS if name in labels},
        }


class ReviewQueue:
    """Reads the queue and writes labels, on a ClickHouse client of its own (chDB: a handle of its own)."""

    def __init__(self, dsn: str) -> None:
        self.sink = ClickHouseSink(dsn)

    def pending(
        self, limit: int, brand: str = "", label: str = "", exclude: Sequence[str] = (), mine: Sequence[str] = ()
    ) -> list[QueueItem]:
        """The most uncertain pending items (lowest margin) first, except that ``mine`` (held by the
        asking session) come before the rest, so the items on someone's screen do not reshuffle."""
        rows = self.sink.client.query(
            PENDING,
            parameters={"exclude": list(exclude), "brand": brand, "label": label, "mine": list(mine), "limit": limit},
        ).result_rows
        return [QueueItem.from_row(row) for row in rows]

    def item(self, tweet_id: str) -> QueueItem | None:
        rows = self.sink.client.query(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM review_queue FINAL WHERE tweet_id = {{id:String}}",
            parameters={"id": tweet_id},
        ).result_rows
        return QueueItem.from_row(rows[0]) if rows else None

    def current_label(self, tweet_id: str) -> ReviewLabel | None:
        """The latest label event of a tweet (which may be a retraction), or None if it has none."""
        rows = self.sink.client.query(
            "SELECT tweet_id, label, reviewer, labelled_at, model_version, confidence, retracted "
            "FROM review_labels WHERE tweet_id = {id:String} ORDER BY labelled_at DESC LIMIT 1",
            parameters={"id": tweet_id},
        ).result_rows
        if not rows:
            return None
        names = ("tweet_id", "label", "reviewer", "labelled_at", "model_version", "confidence", "retracted")
        values = dict(zip(names, rows[0], strict=True))
        if values["labelled_at"].tzinfo is None:  # the column is UTC; some clients hand it over naive
            values["labelled_at"] = values["labelled_at"].replace(tzinfo=UTC)
        return ReviewLabel(**values)

    def counts(self, reviewer: str) -> Counts:
        by_facet = self.sink.client.query(PENDING_BY_FACET).result_rows
        done, mine = self.sink.client.query(DONE, parameters={"reviewer": reviewer}).result_rows[0]
        return Counts({(brand, label): int(n) for brand, label, n in by_facet}, int(done), int(mine))

    def write_label(self, label: ReviewLabel) -> None:
        self.sink.write_labels([label])

    def close(self) -> None:
        self.sink.close()
