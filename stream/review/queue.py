"""The review queue in ClickHouse: pending items, counts, and the labels people gave.

Trusted SQL written here, with every user-supplied value (filters, ids) bound as a query parameter,
never formatted into the text. Blocking calls: the service runs them on a thread of its own.

An *item* is a tweet id together with the text that came with it: ``(tweet_id, text_sha256)``, where
``text_sha256`` is the SHA-256 of the text, computed by ClickHouse itself (``review_queue.text_sha256``
is MATERIALIZED, see ``deploy/clickhouse/004_review.sql``). Anyone who can produce to ``tweets`` can
re-send an id with other text; that is a second item, pending again, and never a relabel of the first.

A label names the item it was given for: ``review_labels.text_sha256`` is the hash of the text the
reviewer was shown (the page sends it back). A reviewer's *opinion* of an item is their latest label event
for it unless that event is a retraction (an undo). Each item wants ``EMOSTREAM_REVIEW_OPINIONS``
opinions from different reviewers (1 by default): it is *pending for a reviewer* while it has fewer, no
adjudicator has settled it, and that reviewer has given none; *done* once it has them (or is settled).
What the opinions decide (``review_decisions``: single, unanimous, majority, disputed, adjudicated) is
what the training snapshot takes, paired with exactly the text of its item.

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
from emostream.schemas.messages import as_utc
from emostream.stream.clickhouse.client import open_client
from emostream.stream.clickhouse.ddl import apply_schema
from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.clickhouse.labels import DONE_ITEMS, GIVEN_BY, LABEL_EVENTS
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
# Pending for one reviewer: not done (fewer opinions than asked for, not settled) and not given by them.
PENDING_FOR = (
    f"(tweet_id, text_sha256) GLOBAL NOT IN ({DONE_ITEMS}) AND (tweet_id, text_sha256) GLOBAL NOT IN ({GIVEN_BY})"
)
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
    WHERE {PENDING_FOR}
      AND NOT has({{exclude:Array(Tuple(String, String))}}, (tweet_id, text_sha256))
      AND (NOT {{restrict:Bool}} OR has({{only:Array(Tuple(String, String))}}, (tweet_id, text_sha256)))
      AND ({{brand:String}} = '' OR brand = {{brand:String}})
      AND ({{label:String}} = '' OR label = {{label:String}})
)
ORDER BY has({{mine:Array(Tuple(String, String))}}, (tweet_id, text_sha256)) DESC, position, margin, tweet_id,
         text_sha256
LIMIT {{limit:UInt32}}
"""
# Gold questions the reviewer has not answered, in an order of their own (a hash of the id and the name).
GOLD_PENDING = f"""
SELECT {", ".join(ITEM_COLUMNS)} FROM review_gold FINAL
WHERE (tweet_id, text_sha256) GLOBAL NOT IN
        (SELECT tweet_id, text_sha256 FROM review_answers WHERE reviewer = {{reviewer:String}})
  AND NOT has({{exclude:Array(Tuple(String, String))}}, (tweet_id, text_sha256))
  AND (NOT {{restrict:Bool}} OR has({{only:Array(Tuple(String, String))}}, (tweet_id, text_sha256)))
  AND ({{brand:String}} = '' OR brand = {{brand:String}})
  AND ({{label:String}} = '' OR label = {{label:String}})
ORDER BY cityHash64(tweet_id, text_sha256, {{reviewer:String}})
LIMIT {{limit:UInt32}}
"""
# Items nobody has given an opinion of yet (and not settled): what waits for a person, whatever the overlap.
PENDING_COUNT = (
    "SELECT count() FROM review_queue FINAL WHERE (tweet_id, text_sha256) GLOBAL NOT IN "
    "(SELECT tweet_id, text_sha256 FROM review_opinions "
    "UNION ALL SELECT tweet_id, text_sha256 FROM review_adjudications)"
)
PENDING_BY_FACET = f"SELECT brand, label, count() FROM review_queue FINAL WHERE {PENDING_FOR} GROUP BY brand, label"
# Items done (enough opinions or settled), and the reviewer's opinions.
DONE = f"""
SELECT (SELECT count() FROM (SELECT DISTINCT tweet_id, text_sha256 FROM ({DONE_ITEMS}))),
       (SELECT count() FROM review_answers WHERE reviewer = {{reviewer:String}})
"""
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


@dataclass(frozen=True)
class Opinion:
    """One reviewer's current label of an item (``review_opinions``)."""

    reviewer: str
    label: str
    labelled_at: datetime


@dataclass(frozen=True)
class Disagreement:
    """A done item whose opinions have no majority (``review_decisions``: disputed): the item and the opinions."""

    item: QueueItem
    opinions: list[Opinion]

    def as_json(self) -> dict[str, Any]:
        """For the team page: the item, and each opinion with its reviewer (shown only to adjudicators)."""
        return {
            "item": self.item.as_json(),
            "opinions": [
                {"reviewer": o.reviewer, "label": o.label, "labelled_at": o.labelled_at.isoformat()}
                for o in self.opinions
            ],
        }


class ReviewQueue:
    """Reads the queue and writes labels, on a ClickHouse client of its own (chDB: a handle of its own).

    ``opinions``: how many different reviewers label each item before it is done (``EMOSTREAM_REVIEW_OPINIONS``).
    """

    def __init__(self, dsn: ClickHouseDsn | str, opinions: int = 1) -> None:
        self.client = open_client(dsn)
        self.opinions = opinions

    def apply_schema(self) -> None:
        """emostream's tables (:func:`emostream.stream.clickhouse.ddl.apply_schema`), for a review service
        that may start before any worker; idempotent."""
        apply_schema(self.client)

    def pending(
        self,
        reviewer: str,
        limit: int,
        brand: str = "",
        label: str = "",
        exclude: Sequence[ItemKey] = (),
        mine: Sequence[ItemKey] = (),
        only: Sequence[ItemKey] | None = None,
    ) -> list[QueueItem]:
        """The items pending for ``reviewer`` (not done, and without an opinion of theirs), the most uncertain
        (lowest margin) first, except that ``mine`` (held by the asking session) come before the rest, so the
        items on someone's screen do not reshuffle. ``only``: just these items (those still pending and
        matching the filters)."""
        rows = self.client.query(
            PENDING,
            parameters={
                "reviewer": reviewer,
                "opinions": self.opinions,
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
        """The queue's item with this id and text hash (a gold question too), or None when there is none."""
        for table in ("review_queue", "review_gold"):
            rows = self.client.query(
                f"SELECT {', '.join(ITEM_COLUMNS)} FROM {table} FINAL "
                "WHERE tweet_id = {id:String} AND text_sha256 = {sha:String}",
                parameters={"id": tweet_id, "sha": sha256},
            ).result_rows
            if rows:
                return QueueItem.from_row(rows[0])
        return None

    def gold_pending(
        self,
        reviewer: str,
        limit: int,
        brand: str = "",
        label: str = "",
        exclude: Sequence[ItemKey] = (),
        only: Sequence[ItemKey] | None = None,
    ) -> list[QueueItem]:
        """Gold questions ``reviewer`` has not answered, matching the filters as items do (``only``: just
        these), as items like any other."""
        rows = self.client.query(
            GOLD_PENDING,
            parameters={
                "reviewer": reviewer,
                "brand": brand,
                "label": label,
                "exclude": [tuple(key) for key in exclude],
                "restrict": only is not None,
                "only": [tuple(key) for key in only or ()],
                "limit": limit,
            },
        ).result_rows
        return [QueueItem.from_row(row) for row in rows]

    def add_gold(self, rows: Sequence[Sequence[Any]]) -> int:
        """Rows of ``review_gold`` (``emostream.stream.review.gold.GOLD_COLUMNS``); the same id and text again
        replaces its row (ReplacingMergeTree). Returns how many were written."""
        from emostream.stream.review.gold import GOLD_COLUMNS

        if rows:
            self.client.insert("review_gold", [list(row) for row in rows], column_names=list(GOLD_COLUMNS))
        return len(rows)

    def gold_accuracy(self) -> list[tuple[str, int, int, float, float]]:
        """Per reviewer: gold questions answered, answered right, accuracy, and the weight retraining gives them."""
        rows = self.client.query(
            "SELECT reviewer, answered, correct, accuracy, weight FROM review_gold_accuracy ORDER BY reviewer"
        ).result_rows
        return [(str(r), int(n), int(c), float(a), float(w)) for r, n, c, a, w in rows]

    def texts(self, tweet_id: str) -> int:
        """How many texts (items) the queue holds for a tweet id."""
        rows = self.client.query(
            "SELECT uniqExact(text_sha256) FROM review_queue WHERE tweet_id = {id:String}", parameters={"id": tweet_id}
        ).result_rows
        return int(rows[0][0])

    def current_label(self, tweet_id: str, sha256: str, reviewer: str) -> ShownLabel | None:
        """The reviewer's latest label event of an item (which may be a retraction), or None if it has none."""
        names = ("tweet_id", "text_sha256", "label", "reviewer", "labelled_at", "model_version", "confidence")
        rows = self.client.query(
            f"SELECT {', '.join(names)}, retracted FROM ({LABEL_EVENTS}) "
            "WHERE tweet_id = {id:String} AND text_sha256 = {sha:String} AND reviewer = {reviewer:String} "
            "ORDER BY labelled_at DESC LIMIT 1",
            parameters={"id": tweet_id, "sha": sha256, "reviewer": reviewer},
        ).result_rows
        if not rows:
            return None
        values = dict(zip((*names, "retracted"), rows[0], strict=True))
        values["labelled_at"] = as_utc(values["labelled_at"])
        return ShownLabel(**values)

    def opinions_of(self, tweet_id: str, sha256: str) -> list[Opinion]:
        """The item's current opinions, oldest first."""
        rows = self.client.query(
            "SELECT reviewer, label, labelled_at FROM review_opinions "
            "WHERE tweet_id = {id:String} AND text_sha256 = {sha:String} ORDER BY labelled_at, reviewer",
            parameters={"id": tweet_id, "sha": sha256},
        ).result_rows
        return [Opinion(str(r), str(lab), as_utc(at)) for r, lab, at in rows]

    def settled(self, tweet_id: str, sha256: str) -> bool:
        """Whether an adjudicator has settled the item."""
        rows = self.client.query(
            "SELECT count() FROM review_adjudications WHERE tweet_id = {id:String} AND text_sha256 = {sha:String}",
            parameters={"id": tweet_id, "sha": sha256},
        ).result_rows
        return int(rows[0][0]) > 0

    def decision(self, tweet_id: str, sha256: str) -> tuple[str, str] | None:
        """The item's ``(decision, label)`` (``review_decisions``), or None while it has no opinion."""
        rows = self.client.query(
            "SELECT decision, label FROM review_decisions WHERE tweet_id = {id:String} AND text_sha256 = {sha:String}",
            parameters={"id": tweet_id, "sha": sha256},
        ).result_rows
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def disagreements(self, limit: int) -> list[Disagreement]:
        """Disputed items (no label has more than half of the opinions, not settled), the oldest opinion first."""
        rows = self.client.query(
            f"SELECT {', '.join('q.' + c for c in ITEM_COLUMNS)}, o.reviewers, o.labels, o.times "
            "FROM (SELECT tweet_id, text_sha256 FROM review_decisions WHERE decision = 'disputed') AS d "
            f"GLOBAL INNER JOIN (SELECT {', '.join(ITEM_COLUMNS)} FROM review_queue FINAL) AS q "
            "ON q.tweet_id = d.tweet_id AND q.text_sha256 = d.text_sha256 "
            "GLOBAL INNER JOIN (SELECT tweet_id, text_sha256, groupArray(reviewer) AS reviewers, "
            "groupArray(label) AS labels, groupArray(labelled_at) AS times, min(labelled_at) AS first "
            "FROM review_opinions GROUP BY tweet_id, text_sha256) AS o "
            "ON o.tweet_id = d.tweet_id AND o.text_sha256 = d.text_sha256 "
            "ORDER BY o.first, d.tweet_id LIMIT {limit:UInt32}",
            parameters={"limit": limit},
        ).result_rows
        found = []
        for row in rows:
            item = QueueItem.from_row(row[: len(ITEM_COLUMNS)])
            reviewers, labels, times = row[len(ITEM_COLUMNS) :]
            opinions = sorted(
                (Opinion(str(r), str(lab), as_utc(at)) for r, lab, at in zip(reviewers, labels, times, strict=True)),
                key=lambda o: (o.labelled_at, o.reviewer),
            )
            found.append(Disagreement(item, opinions))
        return found

    def counts(self, reviewer: str) -> Counts:
        """Items pending for ``reviewer`` per brand and label; items done in all, and ``reviewer``'s opinions."""
        parameters = {"reviewer": reviewer, "opinions": self.opinions}
        by_facet = self.client.query(PENDING_BY_FACET, parameters=parameters).result_rows
        done, mine = self.client.query(DONE, parameters=parameters).result_rows[0]
        return Counts({(brand, label): int(n) for brand, label, n in by_facet}, int(done), int(mine))

    def settle(self, tweet_id: str, sha256: str, label: str, adjudicator: str, at: datetime) -> None:
        """An adjudicator's decision on an item: one row of ``review_adjudications`` (the latest one counts)."""
        self.client.insert(
            "review_adjudications",
            [[tweet_id, sha256, label, adjudicator, at.astimezone(UTC)]],
            column_names=["tweet_id", "text_sha256", "label", "adjudicator", "decided_at"],
        )

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
