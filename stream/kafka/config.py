"""The Kafka side's settings: the consumer group, its timing, and the topics.

Declared here once (default, bounds, help text); ``emostream.settings.Settings`` inherits the fields, so
``EMOSTREAM_GROUP_ID`` and ``--group-id`` set them, and the worker is handed these two small objects.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KafkaConfig(BaseModel):
    """How the worker consumes: its group, the partitions of the topics it creates, and the group's timing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: int = Field(4, gt=0, description="partitions of the topics the worker creates")
    group_id: str = Field("emostream-scorer", description="Kafka consumer group of the workers")
    fetch_max_wait: float = Field(
        0.1, gt=0, description="longest a consumer fetch waits at the broker for data, seconds"
    )
    session_timeout: float = Field(6.0, gt=0, description="Kafka consumer session timeout, seconds")
    heartbeat_interval: float = Field(1.5, gt=0, description="Kafka consumer heartbeat interval, seconds")


class Topics(BaseModel):
    """The names of the four topics: posts in, posts for review, dead letters, reviewers' labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic_tweets: str = Field("tweets", description="input topic")
    topic_review: str = Field("tweets.review", description="topic of low-confidence tweets for human review")
    topic_dlq: str = Field("tweets.dlq", description="dead-letter topic for invalid records")
    topic_labels: str = Field("tweets.labels", description="topic of reviewers' labels (and their retractions)")
