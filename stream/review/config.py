"""The review queue's settings, and ``ReviewSetup``: what a review service is built from.

Apart from the service so that reading the settings (every command does, ``--help`` too) does not load
the service's Kafka and ClickHouse clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from emostream.stream.clickhouse.config import SqlLimits
from emostream.stream.clickhouse.dsn import ClickHouseDsn


class ReviewConfig(BaseModel):
    """How the queue hands out items (``EMOSTREAM_REVIEW_LEASE``) and to how many reviewers
    (``EMOSTREAM_REVIEW_OPINIONS``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    review_lease: float = Field(
        120.0, gt=0, description="seconds an item shown to one reviewer is kept from the others"
    )
    review_opinions: int = Field(
        1,
        ge=1,
        le=5,
        description="how many different reviewers label each item before it is done (2-3 for a team: "
        "agreement is measured, and disputed items go to an adjudicator)",
    )
    review_gold_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="share of the items a reviewer is shown that are gold questions (known labels, loaded with "
        "`emostream review gold`), while they have some left to answer",
    )
    review_gold_min_accuracy: float = Field(
        0.7,
        ge=0,
        le=1,
        description="a reviewer whose accuracy on 5 or more gold questions is below this is flagged on the team page",
    )


@dataclass(frozen=True)
class ReviewSetup:
    """What a review service is built from, assembled once at the top (``emostream.settings``)."""

    review: ReviewConfig
    labels_topic: str
    dsn: ClickHouseDsn  # the writer's: the queue reads items and writes labels
    query_dsn: ClickHouseDsn  # user SQL's: the trends page
    sql: SqlLimits
