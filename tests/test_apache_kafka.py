"""Apache Kafka for the tests: the jars' fetch recipe, the KRaft cluster, and topics laid out for a cluster.

The integration test starts three Kafka 4 nodes (every node broker and controller) and checks what the
worker's topic creation promises on them: replication factor 3 and ``min.insync.replicas=2`` when told so,
and acks=all writes that keep being acknowledged with one node SIGKILLed; then a worker and ``ingest`` on
them while the leader of a partition is SIGKILLed and restarted.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from emostream.schemas import ReviewItem
from emostream.stream.kafka.apache_kafka import (
    KAFKA_VERSIONS,
    KafkaCluster,
    KafkaUnavailable,
    fetch_kafka,
    new_cluster_id,
    resolve_version,
)
from emostream.stream.kafka.config import KafkaConfig
from emostream.stream.kafka.topics import ensure_topics
from tests.conftest import EMOSTREAM


def test_cluster_ids_are_sixteen_bytes_and_never_read_as_an_option() -> None:
    ids = [new_cluster_id() for _ in range(3000)]  # about one raw id in 64 starts with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_versions_resolve_by_line_and_pass_through_when_full() -> None:
    assert resolve_version("4") == KAFKA_VERSIONS["4"] and resolve_version("4").startswith("4.")
    assert resolve_version("3.9").startswith("3.9.")
    assert resolve_version("4.0.1") == "4.0.1"


def test_without_maven_an_empty_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_KAFKA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn here
    with pytest.raises(KafkaUnavailable, match=r"not in .*cache.* and there is no mvn"):
        fetch_kafka("4")


def test_a_cached_version_needs_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "cache" / "9.9.9" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka-clients-9.9.9.jar").write_bytes(b"")
    monkeypatch.setenv("EMOSTREAM_KAFKA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert fetch_kafka("9.9.9") == libs


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster("4", size=3, directory=tmp_path_factory.mktemp("kafka-3")) as cluster:
        yield cluster


async def topic_layout(bootstrap: str, topic: str) -> tuple[int, set[int], str]:
    """(partitions, replica counts across them, min.insync.replicas) of ``topic``, as the cluster reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(40):  # a topic just created may not have reached the broker that answers yet
            (description,) = await admin.describe_topics([topic])
            (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            error_code, _, _, _, entries = response.resources[0][:5]
            found = [entry[1] for entry in entries if entry[0] == "min.insync.replicas"]
            if description["partitions"] and error_code == 0 and found:
                replicas = {len(p["replicas"]) for p in description["partitions"]}
                return len(description["partitions"]), replicas, found[0]
            await asyncio.sleep(0.25)
        raise AssertionError(f"{topic} not described within 10 s: {description}, config error {error_code}")
    finally:
        await admin.close()


async def acknowledged_writes(bootstrap: str, topic: str, n: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        results = [await producer.send_and_wait(topic, f"r{i}".encode(), key=f"k{i}".encode()) for i in range(n)]
        return len(results)
    finally:
        await producer.stop()


@pytest.mark.integration
def test_topics_get_the_layout_they_are_told_and_survive_one_node_killed(three_nodes: KafkaCluster) -> None:
    layout = KafkaConfig(partitions=3, replication_factor=3, min_insync_replicas=2)
    created = asyncio.run(ensure_topics(three_nodes.bootstrap, ["laid-out", "laid-out"], layout))
    assert created == ["laid-out"]
    assert asyncio.run(topic_layout(three_nodes.bootstrap, "laid-out")) == (3, {3}, "2")
    assert asyncio.run(ensure_topics(three_nodes.bootstrap, ["laid-out"], layout)) == []  # exists: left alone
    single = asyncio.run(ensure_topics(three_nodes.bootstrap, ["one-replica"], 2))  # a benchmark's plain count
    assert single == ["one-replica"]
    assert asyncio.run(topic_layout(three_nodes.bootstrap, "one-replica")) == (2, {1}, "1")
    victim = three_nodes.nodes[0]
    three_nodes.kill_node(victim)
    try:
        # two of three replicas in sync is enough: every acks=all write is still acknowledged
        assert asyncio.run(acknowledged_writes(three_nodes.bootstrap, "laid-out", 30)) == 30
    finally:
        three_nodes.start_node(victim)


async def leaders(bootstrap: str, topic: str) -> dict[int, tuple[int, bool]]:
    """partition -> (leader's node id, whether every replica is in sync) of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        return {p["partition"]: (p["leader"], set(p["isr"]) == set(p["replicas"])) for p in description["partitions"]}
    finally:
        await admin.close()


@pytest.mark.integration
def test_a_leader_sigkilled_mid_stream_loses_nothing_and_counts_nothing_twice(
    three_nodes: KafkaCluster, trained_registry: Path, small_data: Path, tmp_path: Path
) -> None:
    """The worker and ``ingest`` ride out the leader of a partition dying under them (no controlled shutdown)
    and coming back: every tweet scored once, every review item on its topic, the worker never restarted.
    (``benchmarks/kafka_failover.py`` adds the rolling restart, hostile records and the stall times.)"""
    from tests.test_streaming import Stack, read_topic, tweets_file

    stack = Stack(three_nodes.bootstrap, trained_registry, tmp_path)
    stack.env.update({"EMOSTREAM_REPLICATION_FACTOR": "3", "EMOSTREAM_MIN_INSYNC_REPLICAS": "2"})
    path, _ = tweets_file(small_data, tmp_path / "tweets.jsonl", 400)
    try:
        worker = stack.start_worker()
        ingest = subprocess.Popen(
            [str(EMOSTREAM), "ingest", str(path), "--rate", "40"],
            env={**os.environ, **stack.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while stack.sql("SELECT count() FROM emotion_scores")[0][0] < 60:  # mid-stream
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.2)
        layout = asyncio.run(leaders(three_nodes.bootstrap, stack.topic))
        assert len(layout) == 4 and all(in_sync for _, in_sync in layout.values())
        victim = three_nodes.node(layout[0][0])
        three_nodes.kill_node(victim)
        time.sleep(3)
        three_nodes.start_node(victim)
        _, errors = ingest.communicate(timeout=120)
        assert ingest.returncode == 0, errors.decode()[-2000:]
        assert b"refused an idempotent producer" not in errors  # Kafka grants ingest its idempotent producer
        stack.wait_for_rows(400, timeout=180)
        time.sleep(3)  # anything redelivered has had time to land
        assert worker.poll() is None, stack.logs()  # the same worker all along
        assert stack.sql("SELECT count(), uniqExact(tweet_id) FROM emotion_scores")[0] == [400, 400]  # no FINAL
        queued = {row[0] for row in stack.sql("SELECT DISTINCT tweet_id FROM review_queue")}
        on_topic = {
            ReviewItem.model_validate_json(v).tweet.id
            for v in read_topic(three_nodes.bootstrap, f"{stack.topic}.review", len(queued))
        }
        assert queued and on_topic == queued
    finally:
        stack.stop()
