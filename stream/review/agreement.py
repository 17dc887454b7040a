"""How far the review team agrees: the figures of ``deploy/clickhouse/007_review_agreement.sql``, in one object.

Labels from people are only as good as their agreement: if two reviewers label the same tweet differently
half the time, the model cannot learn better than that, and a retrain on those labels measures noise. So
the team's agreement is worth watching beside the labels themselves. The views do the per-item arithmetic
where the opinions are (``review_agreement``: Krippendorff's alpha over all labels and per label;
``review_reviewer_agreement``: each reviewer's share of agreeing pairs); this module reads them and adds
what SQL is poor at, Cohen's kappa between each two reviewers who share enough items (scikit-learn's, over
their shared items, read from ``review_opinions``), so that a reviewer who reads the guidelines differently
shows up as low kappa with everyone else. See the SQL file's header for what each figure means.

An item is ``(tweet_id, text_sha256)``; ``review_opinions`` holds one row per item and reviewer. Undefined
figures (no data, no variation) are ``None``, never NaN: :meth:`TeamAgreement.as_json` is plain JSON.
Trusted SQL only: the one value that varies (``min_shared``) is bound as a query parameter.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from sklearn.metrics import cohen_kappa_score

ALPHA_ROWS = "SELECT label, alpha, items, opinions, reviewers, observed_agreement FROM review_agreement ORDER BY label"
REVIEWER_ROWS = "SELECT reviewer, labelled, shared, agreement FROM review_reviewer_agreement ORDER BY reviewer"
# Per two reviewers (first < second), their labels of the items both gave an opinion on, in the same order.
SHARED_LABELS = """
SELECT a.reviewer, b.reviewer, groupArray(a.label), groupArray(b.label)
FROM review_opinions AS a
INNER JOIN review_opinions AS b ON a.tweet_id = b.tweet_id AND a.text_sha256 = b.text_sha256
WHERE a.reviewer < b.reviewer
GROUP BY a.reviewer, b.reviewer
HAVING count() >= {min_shared:UInt64}
ORDER BY a.reviewer, b.reviewer
"""


def finite(value: float | None) -> float | None:
    """``value`` as a float, ``None`` for NULL and NaN (an undefined figure)."""
    if value is None or math.isnan(value):
        return None
    return float(value)


@dataclass(frozen=True)
class LabelAgreement:
    """A row of ``review_agreement``: all labels (``label == ""``) or one label against the others."""

    label: str
    alpha: float | None  # Krippendorff's alpha, nominal; None when undefined
    items: int  # items with at least two opinions
    opinions: int  # opinions on those items
    reviewers: int  # reviewers with an opinion on one of them
    observed_agreement: float | None  # share of agreeing pairs of opinions on the same item; None: no pair


@dataclass(frozen=True)
class ReviewerAgreement:
    """A row of ``review_reviewer_agreement``: one reviewer against everyone else on the same items."""

    reviewer: str
    labelled: int  # their opinions
    shared: int  # their opinions on items someone else also labelled
    agreement: float | None  # share of their pairs with others' opinions that agree; None when shared == 0


@dataclass(frozen=True)
class PairKappa:
    """Cohen's kappa between two reviewers (``first < second``) over the items both labelled."""

    first: str
    second: str
    items: int
    kappa: float | None  # None when undefined (both gave one and the same label throughout)


@dataclass(frozen=True)
class TeamAgreement:
    """The review team's agreement: alpha overall and per label, each reviewer, each two reviewers."""

    overall: LabelAgreement
    labels: tuple[LabelAgreement, ...]
    reviewers: tuple[ReviewerAgreement, ...]
    pairs: tuple[PairKappa, ...]  # only pairs sharing at least min_shared items
    min_shared: int

    def as_json(self) -> dict[str, Any]:
        """Plain dicts and lists, every undefined figure (NaN included) as ``None``."""
        cleaned: dict[str, Any] = clean(asdict(self))
        return cleaned


def clean(value: Any) -> Any:
    """``value`` with NaN replaced by ``None`` throughout, tuples as lists."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {key: clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    return value


def team_agreement(client: Client, min_shared: int = 5) -> TeamAgreement:
    """The views' figures and the pairwise kappas, read with ``client``. Blocking.

    ``min_shared``: the least number of shared items for a pair of reviewers to get a kappa (at least 1).
    """
    if min_shared < 1:
        raise ValueError(f"min_shared must be at least 1, not {min_shared}")
    rows = [
        LabelAgreement(str(label), finite(alpha), int(items), int(opinions), int(reviewers), finite(observed))
        for label, alpha, items, opinions, reviewers, observed in client.query(ALPHA_ROWS).result_rows
    ]
    overall = [row for row in rows if row.label == ""]
    if len(overall) != 1:
        raise RuntimeError(f"review_agreement has {len(overall)} rows for all labels (label = ''), not 1")
    reviewers = tuple(
        ReviewerAgreement(str(reviewer), int(labelled), int(shared), finite(agreement))
        for reviewer, labelled, shared, agreement in client.query(REVIEWER_ROWS).result_rows
    )
    pairs = tuple(
        PairKappa(str(first), str(second), len(first_labels), kappa(first_labels, second_labels))
        for first, second, first_labels, second_labels in client.query(
            SHARED_LABELS, parameters={"min_shared": min_shared}
        ).result_rows
    )
    return TeamAgreement(
        overall=overall[0],
        labels=tuple(row for row in rows if row.label != ""),
        reviewers=reviewers,
        pairs=pairs,
        min_shared=min_shared,
    )


def kappa(first: list[str], second: list[str]) -> float | None:
    """scikit-learn's Cohen's kappa of two reviewers' labels of the same items; ``None`` when undefined."""
    with warnings.catch_warnings():  # undefined (0/0): a RuntimeWarning or a metric warning, by version
        warnings.simplefilter("ignore")
        return finite(float(cohen_kappa_score(first, second)))
