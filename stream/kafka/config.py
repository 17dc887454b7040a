"""The Kafka side's settings: the consumer group, its timing, and the topics.

Declared here once (default, bounds, help text); ``emostream.settings.Settings`` inherits the fields, so
``EMOSTREAM_GROUP_ID`` and ``--group-id`` set them, and the worker is handed these two small objects.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class KafkaConfig(BaseModel):
    """How the worker consumes: its group, the layout of the topics it creates, and the group's timing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: int = Field(4, gt=0, description="partitions of the topics the worker creates")
    replication_factor: int = Field(
        1, gt=0, description="replicas of each topic the worker creates: 1 on one broker, 3 on a production cluster"
    )
    min_insync_replicas: int = Field(
        1,
        gt=0,
        description="min.insync.replicas of the topics the worker creates: an acks=all write needs this many "
        "replicas (2 of 3 keeps writing with one broker down and never acknowledges a write only one broker has)",
    )
    group_id: str = Field("emostream-scorer", description="Kafka consumer group of the workers")
    fetch_max_wait: float = Field(
        0.1, gt=0, description="longest a consumer fetch waits at the broker for data, seconds"
    )
    session_timeout: float = Field(6.0, gt=0, description="Kafka consumer session timeout, seconds")
    heartbeat_interval: float = Field(1.5, gt=0, description="Kafka consumer heartbeat interval, seconds")

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Self:
        """More in-sync replicas than replicas would make every acks=all write fail: refused up front."""
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) is more than replication_factor "
                f"({self.replication_factor}): no acks=all write could ever succeed"
            )
        return self


class Topics(BaseModel):
    """The names of the four topics: posts in, posts for review, dead letters, reviewers' labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic_tweets: str = Field("tweets", description="input topic")
    topic_review: str = Field("tweets.review", description="topic of low-confidence tweets for human review")
    topic_dlq: str = Field("tweets.dlq", description="dead-letter topic for invalid records")
    topic_labels: str = Field("tweets.labels", description="topic of reviewers' labels (and their retractions)")
