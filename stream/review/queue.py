"""The review queue in ClickHouse: pending items, counts, and the labels people gave.

Trusted SQL written here, with every user-supplied value (filters, ids) bound as a query parameter,
never formatted into the text. Blocking calls: the service runs them on a thread of its own.

An *item* is a tweet id together with the text that came with it: ``(tweet_id, text_sha256)``, where
``text_sha256`` is the SHA-256 of the text, computed by ClickHouse itself (``review_queue.text_sha256``
is MATERIALIZED, see ``deploy/clickhouse/004_review.sql``). Anyone who can produce to ``tweets`` can
re-send an id with other text; that is a second item, pending again, and never a relabel of the first.

A label names the item it was given for: ``review_labels.text_sha256`` is the hash of the text the
reviewer was shown (the page sends it back). An item's *current label* is its latest label event unless
that event is a retraction (an undo); *pending* means in ``review_queue`` without a current label. The
training snapshot pairs each current label with exactly the text of its item.

Labels written before ``text_sha256`` existed carry ``''``. Which text they were given for is not
recorded; they count for their tweet id only while the queue holds a single text for it (the one the old
code showed and trained on). Once another text arrives for that id, such a label binds to neither text:
both are pending, so a re-sent text can never inherit a label, at worst it sends the old text back to a
person (see ``LABEL_EVENTS``).

``GLOBAL IN`` / ``GLOBAL JOIN`` where a query on a table has a subquery on another: on one server they
are plain ``IN``/``JOIN``; on a cluster (Distributed tables) they are what ClickHouse allows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from emostream.schemas import LABELS, ReviewLabel
from emostream.stream.clickhouse.client import open_client
from emostream.stream.clickhouse.ddl import apply_schema
from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.clickhouse.labels import (
    CURRENT_LABELS,
    LABEL_EVENTS,
    LABELLED,
)
from emostream.stream.clickhouse.sink import LABEL_COLUMNS

SHA256_HEX = r"^[0-9a-f]{64}$"
TextSha256 = Annotated[str, StringConstraints(pattern=SHA256_HEX)]
ItemKey = tuple[str, str]  # (tweet_id, text_sha256)


def text_sha256(text: str) -> str:
    """The hash ClickHouse computes for ``review_queue.text_sha256``: SHA-256 of the UTF-8 text, lower hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ShownLabel(ReviewLabel):
    """A label bound to what the reviewer was shown: a row of ``review_labels`` and a ``tweets.labels`` record.

    ``schemas.ReviewLabel`` plus the hash of the text it was given for, so that a consumer of the topic,
    like the training snapshot, can tell which text of a tweet id the label is about.
    """

    text_sha256: TextSha256 = Field(description="SHA-256 (hex) of the text the label was given for")


ITEM_COLUMNS = (
    "tweet_id",
    "text_sha256",
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
NOT_LABELLED = f"(tweet_id, text_sha256) GLOBAL NOT IN ({LABELLED})"
# The queue's order: the most uncertain first (lowest margin), with the random sample of confident
# tweets (reason "sample: ...", see emostream.stream.worker.review_policy) interleaved in proportion to its share, in
# a fixed pseudo-random order: sorted last by margin, a sampled tweet would never come up in a long
# queue, and the confident errors it exists to catch would never reach anyone.
PENDING = f"""
SELECT {", ".join(ITEM_COLUMNS)}
FROM (
    SELECT *, text_sha256, startsWith(reason, 'sample:') AS sampled,
           row_number() OVER (PARTITION BY sampled ORDER BY
               if(sampled, cityHash64(tweet_id) / 18446744073709551616.0, toFloat64(margin)), queued_at, tweet_id,
               text_sha256)
           / count() OVER (PARTITION BY sampled) AS position
    FROM review_queue FINAL
    WHERE {NOT_LABELLED}
      AND NOT has({{exclude:Array(Tuple(String, String))}}, (tweet_id, text_sha256))
      AND (NOT {{restrict:Bool}} OR has({{only:Array(Tuple(String, String))}}, (tweet_id, text_sha256)))
      AND ({{brand:String}} = '' OR brand = {{brand:String}})
      AND ({{label:String}} = '' OR label = {{label:String}})
)
ORDER BY has({{mine:Array(Tuple(String, String))}}, (tweet_id, text_sha256)) DESC, position, margin, tweet_id,
         text_sha256
LIMIT {{limit:UInt32}}
"""
PENDING_COUNT = f"SELECT count() FROM review_queue FINAL WHERE {NOT_LABELLED}"
PENDING_BY_FACET = f"SELECT brand, label, count() FROM review_queue FINAL WHERE {NOT_LABELLED} GROUP BY brand, label"
DONE = f"SELECT count(), countIf(reviewer = {{reviewer:String}}) FROM ({CURRENT_LABELS}) WHERE NOT retracted"
SHOWN_LABEL_COLUMNS = (*LABEL_COLUMNS, "text_sha256")


@dataclass(frozen=True)
class QueueItem:
    """One item of the review queue as the page shows it: the tweet, the model's scores, why it was sent."""

    tweet_id: str
    text_sha256: str
    brand: str
    created_at: datetime
    text: str
    model_version: str
    label: str  # the model's
    confidence: float
    margin: float
    probabilities: dict[str, float]
    reason: str

    @property
    def key(self) -> ItemKey:
        """The item's identity: the tweet id and the hash of its text."""
        return (self.tweet_id, self.text_sha256)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> QueueItem:
        """An item from a row of ``ITEM_COLUMNS``."""
        values = dict(zip(ITEM_COLUMNS, row, strict=True))
        return cls(
            tweet_id=values["tweet_id"],
            text_sha256=values["text_sha256"],
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
        """The item for the page's JSON (times as ISO 8601)."""
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


@dataclass
class Counts:
    """Pending items per (brand, model label), and labelled items in all and by one reviewer."""

    pending: dict[tuple[str, str], int] = field(default_factory=dict)
    done: int = 0
    done_by_reviewer: int = 0

    def as_json(self, brand: str = "", label: str = "") -> dict[str, Any]:
        """The counts for the page: pending matching the filters and in all, per brand and per label, and done."""
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

    def __init__(self, dsn: ClickHouseDsn | str) -> None:
        self.client = open_client(dsn)

    def apply_schema(self) -> None:
        """emostream's tables (:func:`emostream.stream.clickhouse.ddl.apply_schema`), for a review service
        that may start before any worker; idempotent."""
        apply_schema(self.client)

    def pending(
        self,
        limit: int,
        brand: str = "",
        label: str = "",
        exclude: Sequence[ItemKey] = (),
        mine: Sequence[ItemKey] = (),
        only: Sequence[ItemKey] | None = None,
    ) -> list[QueueItem]:
        """The most uncertain pending items (lowest margin) first, except that ``mine`` (held by the
        asking session) come before the rest, so the items on someone's screen do not reshuffle.
        ``only``: just these items (those still pending and matching the filters)."""
        rows = self.client.query(
            PENDING,
            parameters={
                "exclude": [tuple(key) for key in exclude],
                "restrict": only is not None,
                "only": [tuple(key) for key in only or ()],
                "brand": brand,
                "label": label,
                "mine": [tuple(key) for key in mine],
                "limit": limit,
            },
        ).result_rows
        return [QueueItem.from_row(row) for row in rows]

    def item(self, tweet_id: str, sha256: str) -> QueueItem | None:
        """The queue's item with this id and text hash, or None when there is none."""
        rows = self.client.query(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM review_queue FINAL "
            "WHERE tweet_id = {id:String} AND text_sha256 = {sha:String}",
            parameters={"id": tweet_id, "sha": sha256},
        ).result_rows
        return QueueItem.from_row(rows[0]) if rows else None

    def texts(self, tweet_id: str) -> int:
        """How many texts (items) the queue holds for a tweet id."""
        rows = self.client.query(
            "SELECT uniqExact(text_sha256) FROM review_queue WHERE tweet_id = {id:String}", parameters={"id": tweet_id}
        ).result_rows
        return int(rows[0][0])

    def current_label(self, tweet_id: str, sha256: str) -> ShownLabel | None:
        """The latest label event of an item (which may be a retraction), or None if it has none."""
        names = ("tweet_id", "text_sha256", "label", "reviewer", "labelled_at", "model_version", "confidence")
        rows = self.client.query(
            f"SELECT {', '.join(names)}, retracted FROM ({LABEL_EVENTS}) "
            "WHERE tweet_id = {id:String} AND text_sha256 = {sha:String} ORDER BY labelled_at DESC LIMIT 1",
            parameters={"id": tweet_id, "sha": sha256},
        ).result_rows
        if not rows:
            return None
        values = dict(zip((*names, "retracted"), rows[0], strict=True))
        if values["labelled_at"].tzinfo is None:  # the column is UTC; some clients hand it over naive
            values["labelled_at"] = values["labelled_at"].replace(tzinfo=UTC)
        return ShownLabel(**values)

    def counts(self, reviewer: str) -> Counts:
        """Pending items per brand and label, and labelled ones in all and by ``reviewer``."""
        by_facet = self.client.query(PENDING_BY_FACET).result_rows
        done, mine = self.client.query(DONE, parameters={"reviewer": reviewer}).result_rows[0]
        return Counts({(brand, label): int(n) for brand, label, n in by_facet}, int(done), int(mine))

    def write_label(self, label: ShownLabel) -> None:
        """One row of ``review_labels``, with the hash of the text the label was given for.

        Written here rather than by ``ClickHouseSink.write_labels`` (whose columns are those of
        ``schemas.ReviewLabel``): a person's labels come one at a time, so one small insert each.
        """
        row = [
            value.astimezone(UTC) if isinstance(value, datetime) else value
            for value in (getattr(label, name) for name in SHOWN_LABEL_COLUMNS)
        ]
        self.client.insert("review_labels", [row], column_names=list(SHOWN_LABEL_COLUMNS))

    def close(self) -> None:
        """Close the queue's client."""
        self.client.close()
