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
    """How the queue hands out items (``EMOSTREAM_REVIEW_LEASE``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    review_lease: float = Field(
        120.0, gt=0, description="seconds an item shown to one reviewer is kept from the others"
    )


@dataclass(frozen=True)
class ReviewSetup:
    """What a review service is built from, assembled once at the top (``emostream.settings``)."""

    review: ReviewConfig
    labels_topic: str
    dsn: ClickHouseDsn  # the writer's: the queue reads items and writes labels
    query_dsn: ClickHouseDsn  # user SQL's: the trends page
    sql: SqlLimits
