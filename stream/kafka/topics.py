"""Explicit topic creation: tansu (and locked-down Kafka clusters) do not auto-create topics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from emostream.stream.kafka.config import KafkaConfig


async def ensure_topics(bootstrap: str, names: Iterable[str], layout: KafkaConfig | int) -> list[str]:
    """Create the topics that do not exist yet, laid out as ``layout`` says; returns the ones it created.

    ``layout``: a :class:`KafkaConfig` (partitions, replication factor, min.insync.replicas), or just a number
    of partitions (one replica: a benchmark's or a test's single broker). Topics that exist are left as they
    are: their layout is the cluster operator's.
    """
    config = layout if isinstance(layout, KafkaConfig) else KafkaConfig(partitions=layout)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if missing:
            settings = {"min.insync.replicas": str(config.min_insync_replicas)}
            new = [NewTopic(n, config.partitions, config.replication_factor, topic_configs=settings) for n in missing]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(new)
        return missing
    finally:
        await admin.close()
