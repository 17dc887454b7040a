"""User SQL's limits (``EMOSTREAM_SQL_*``), apart from ``sql`` so that reading the settings does not load
clickhouse-connect."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SqlLimits(BaseModel):
    """What one user statement may take: time, rows, bytes returned and memory (``EMOSTREAM_SQL_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sql_timeout: float = Field(30.0, gt=0, description="longest a user SQL statement may run, seconds")
    sql_max_rows: int = Field(100_000, gt=0, description="most rows a user SQL statement may return")
    sql_max_bytes: int = Field(64_000_000, gt=0, description="most bytes a user SQL statement may return")
    sql_max_memory: int = Field(
        1_000_000_000,
        gt=0,
        description="most bytes of memory a user SQL statement may use (ClickHouse's max_memory_usage); in the "
        "embedded mode the engine shares the worker's process, so an unbounded query could take the worker down",
    )
