"""Every emostream setting in one place: a default, an ``EMOSTREAM_*`` environment variable and a CLI flag.

Each field is declared once, in the room whose code reads it (``model.config``, ``trainer.config``,
``stream.kafka.config``, ...); ``Settings`` inherits them all, adds what only the command line needs
(where the data, registry and state are; where Kafka and ClickHouse are), and builds the small frozen
configs the parts are handed (``worker_setup``, ``review_setup``, ``train_config``, ...), once, here at the
top. No part below the CLI sees ``Settings``.

The CLI passes only the flags a user typed as keyword arguments, which pydantic-settings ranks above the
environment, so the precedence is: flag > environment variable > ``.env`` file > default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from emostream.model.config import RuntimeConfig
from emostream.stream.clickhouse.config import SqlLimits
from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.kafka.config import KafkaConfig, Topics
from emostream.stream.review.config import ReviewConfig, ReviewSetup
from emostream.stream.web.auth import WebConfig
from emostream.stream.worker.config import MicroBatch, WorkerConfig, WorkerSetup
from emostream.stream.worker.records import RecordLimits
from emostream.stream.worker.review_policy import ReviewRouting
from emostream.trainer.config import RetrainPolicy, RetrainSettings, TrainConfig, TrainingSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path("../shared/data/emotion")
HUB_DATASET = "emotion"
Piece = TypeVar("Piece", bound=BaseModel)


def default_data_source() -> str:
    """``../shared/data/emotion`` when it exists (from the working directory or the checkout), else the Hub."""
    for candidate in (SHARED_DATA, REPO_ROOT / SHARED_DATA):
        if candidate.is_dir():
            return str(candidate.resolve())
    return HUB_DATASET


def data_sources(value: object) -> object:
    """The ``data`` setting as a list of sources, from any of the forms it is given in.

    Text (``EMOSTREAM_DATA``, ``.env``, a keyword) is either a JSON list (``["a", "b"]``) or sources
    separated by ``os.pathsep`` (``:``, ``;`` on Windows), as ``PATH`` is: one path needs no quoting and
    Hub ids (``dair-ai/emotion``) hold no ``:``. Empty parts are dropped. A ``Path`` is one source, never
    split. A list from the command line (``--data A --data B``) is taken as it is."""
    if isinstance(value, os.PathLike):
        return [os.fspath(value)]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)  # a bad one is a ValueError: pydantic names the setting
        return [part for part in value.split(os.pathsep) if part.strip()]
    if isinstance(value, list | tuple):
        return [os.fspath(item) if isinstance(item, os.PathLike) else item for item in value]
    return value


class Settings(
    BaseSettings,
    TrainingSettings,
    RuntimeConfig,
    KafkaConfig,
    Topics,
    MicroBatch,
    RecordLimits,
    ReviewRouting,
    WorkerConfig,
    WebConfig,
    ReviewConfig,
    RetrainSettings,
    SqlLimits,
):
    """All options; field descriptions double as the CLI's help text."""

    model_config = SettingsConfigDict(
        env_prefix="EMOSTREAM_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # secrets among them
        frozen=False,
    )

    # data
    data: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [default_data_source()],
        min_length=1,
        description="data directory, file or Hub data set id; repeat to train on several, the first one's test "
        f"split primary (in the environment: {os.pathsep!r}-separated or a JSON list)",
    )
    text_column: str = Field("text", description="column (CSV) or key (JSON) holding the text")
    label_column: str = Field("label", description="column (CSV) or key (JSON) holding the label")
    # model registry and outputs
    registry: Path = Field(Path("models"), description="model registry directory")
    reports: Path = Field(Path("reports"), description="directory for plots and CSV reports")
    # where the streaming parts are
    home: Path = Field(Path(".emostream"), description="state directory of the embedded mode")
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: the embedded broker")
    clickhouse_dsn: str | None = Field(None, description="ClickHouse DSN; unset: chdb:///<home>/clickhouse")
    clickhouse_query_dsn: str | None = Field(
        None, description="ClickHouse DSN for user SQL, a read-only user in production; unset: the worker's DSN"
    )

    _data_sources = field_validator("data", mode="before")(data_sources)

    def piece(self, kind: type[Piece]) -> Piece:
        """One of the small configs this class inherits, with the values set here."""
        mine = type(self).model_fields
        return kind.model_validate({name: getattr(self, name) for name in kind.model_fields if name in mine})

    def clickhouse(self) -> ClickHouseDsn:
        """The writer's ClickHouse: the configured DSN, else the embedded engine under ``home``."""
        if self.clickhouse_dsn:
            return ClickHouseDsn(self.clickhouse_dsn)
        return ClickHouseDsn.embedded_in(self.home / "clickhouse")

    def query_clickhouse(self) -> ClickHouseDsn:
        """User SQL's ClickHouse: the read-only DSN when one is configured, else the writer's."""
        return ClickHouseDsn(self.clickhouse_query_dsn) if self.clickhouse_query_dsn else self.clickhouse()

    def resolved_clickhouse_dsn(self) -> str:
        """The writer's DSN as text (for processes and files that take a string)."""
        return self.clickhouse().url

    def resolved_query_dsn(self) -> str:
        """User SQL's DSN as text."""
        return self.query_clickhouse().url

    def review_setup(self) -> ReviewSetup:
        """What a review service is built from."""
        return ReviewSetup(
            review=self.piece(ReviewConfig),
            labels_topic=self.topic_labels,
            dsn=self.clickhouse(),
            query_dsn=self.query_clickhouse(),
            sql=self.piece(SqlLimits),
        )

    def on_embedded_broker(self) -> Settings:
        """These settings for a worker on the embedded broker (tansu): its group timing, unless configured.

        tansu holds every group join for half the session (README, "Consumer group timing"): at 6 s a
        rebalance leaves the running worker 3 s without partitions and a crashed worker's partitions wait
        9.8 s; at 2 s, 1 s and 3.3 s. Apache Kafka refuses sessions under 6 s by default and barely stalls
        at 6 s, so 6 s / 1.5 s stay the defaults everywhere else.
        """
        timing = {"session_timeout": 2.0, "heartbeat_interval": 0.5}
        update = {name: value for name, value in timing.items() if name not in self.model_fields_set}
        return self.model_copy(update=update) if update else self

    def worker_setup(self) -> WorkerSetup:
        """What ``run_worker`` is built from."""
        return WorkerSetup(
            registry=self.registry,
            home=self.home,
            runtime=self.piece(RuntimeConfig),
            kafka=self.piece(KafkaConfig),
            topics=self.piece(Topics),
            batch=self.piece(MicroBatch),
            limits=self.piece(RecordLimits),
            routing=self.piece(ReviewRouting),
            worker=self.piece(WorkerConfig),
            web=self.piece(WebConfig),
            dsn=self.clickhouse(),
            query_dsn=self.query_clickhouse(),
            sql=self.piece(SqlLimits),
            review=self.review_setup(),
        )

    def train_config(self) -> TrainConfig:
        """A first training's configuration (``emostream train``)."""
        return self.piece(TrainConfig)

    def retrain_policy(self) -> RetrainPolicy:
        """A retraining round's configuration (``emostream retrain``)."""
        return self.piece(RetrainPolicy)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags the user gave (``None`` means not given)."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
