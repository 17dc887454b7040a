"""The worker's own settings, and ``WorkerSetup``: every small config a worker is built from, in one value.

Each field is declared once, in the room whose code reads it (Kafka's timing in ``kafka.config``, user
SQL's limits in ``clickhouse.sql``, ...); ``emostream.settings`` builds a ``WorkerSetup`` from the user's
settings once, at the top, and each constructor here takes only its own piece of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emostream.model.config import RuntimeConfig
from emostream.stream.clickhouse.config import SqlLimits
from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.kafka.config import KafkaConfig, Topics
from emostream.stream.review.config import ReviewSetup
from emostream.stream.web.auth import WebConfig
from emostream.stream.worker.records import RecordLimits
from emostream.stream.worker.review_policy import ReviewRouting


class MicroBatch(BaseModel):
    """A micro-batch: at most ``max_batch`` records, or what arrived within ``max_wait`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch: int = Field(512, gt=0, description="tweets per micro-batch (at most)")
    max_wait: float = Field(0.1, gt=0, description="seconds to wait for a micro-batch to fill")


class WorkerConfig(BaseModel):
    """How the worker process runs: its event loop, stop, model polling and when it reports itself failing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the worker's event loop: uvloop (Faust's recommended loop; it carries ~1.6x the records per "
        "second of asyncio's own loop here) or asyncio (where uvloop is not installed)",
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, description="seconds a stop signal waits for the worker to stop cleanly before it exits anyway"
    )
    model_poll_interval: float = Field(
        5.0,
        ge=0,
        description="seconds between the worker's checks of the registry's current pointer; a promoted version "
        "is loaded beside the serving one and scores from the next batch on. 0: never reload",
    )
    failing_batch_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a batch may keep failing (retried: ClickHouse, the broker or the model down) before "
        "/readyz reports the worker not ready and /metrics names the error",
    )


@dataclass(frozen=True)
class WorkerSetup:
    """Everything ``run_worker`` is built from; assembled once from the settings by ``emostream.settings``."""

    registry: Path
    home: Path
    runtime: RuntimeConfig
    kafka: KafkaConfig
    topics: Topics
    batch: MicroBatch
    limits: RecordLimits
    routing: ReviewRouting
    worker: WorkerConfig
    web: WebConfig
    dsn: ClickHouseDsn
    query_dsn: ClickHouseDsn
    sql: SqlLimits
    review: ReviewSetup
