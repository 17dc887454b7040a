"""Kafka clients other than the project's own (aiokafka), as a new user would use them, on the embedded
broker (tansu) and on Apache Kafka 4: confluent-kafka (librdkafka) feeds the stream and reads the review and
dead-letter topics with a consumer group; Debian's kcat does the same (on tansu only once it runs on a
current librdkafka); on Kafka 4 a consumer group also reads with librdkafka's defaults and with
``group.protocol=consumer`` (KIP-848).

What was measured on tansu 0.6.0 with confluent-kafka 2.16.1 (librdkafka 2.16.0), and is in the README:
- A group consumer's first assignment takes about half its ``session.timeout.ms``: tansu holds the
  JoinGroup that carries the member id for session/2 (librdkafka's debug log: the JoinGroup response comes
  3.0 s after the request at a 6 s session). librdkafka's default session (45 s) gives 23 s; 20 s gives
  10 s; 6 s gives 3 s; 2 s gives 1 s. ``max.poll.interval.ms`` (the rebalance timeout, 300 s by default)
  does not matter: 45 s or 300 s both give 23 s, and a second member joining a live group was assigned
  5 s after it subscribed either way. (librdkafka refuses a ``max.poll.interval.ms`` below
  ``session.timeout.ms``, so lowering the former below 45 s lowers the latter too, which is what helped.)
- ``group.protocol=consumer`` (KIP-848) never gets an assignment: tansu does not answer
  ConsumerGroupHeartbeat ("not supported by broker"). ``cooperative-sticky`` behaves like ``range``.
- ``assign()`` without joining a group reads at once (0.05 s for 20 records).
- Debian's kcat 1.7.1 (librdkafka 2.0.2) fails at once ("Read underflow" on ApiVersions, see
  :func:`test_debian_kcat_produces_and_reads_in_a_group`).

What was measured on Apache Kafka 4.4.0 (one KRaft node of ``apache_kafka.KafkaCluster``) with the same
clients, and is in the README (three fresh groups each, 4 partitions, 20 records):
- The session does not delay the join: with the test brokers' ``group.initial.rebalance.delay.ms=0`` a
  classic group is assigned in 0.07 s at librdkafka's default 45 s session and at 6 s alike; KIP-848 in
  0.01-0.10 s; aiokafka in 0.02 s at 10 s, 6 s or 2 s. At Kafka's default delay (3 s) every classic join
  (librdkafka at 45 s or 6 s, aiokafka, kcat) takes 3.0-3.1 s, and KIP-848, which has no such delay,
  still 0.07-0.12 s.
- The first group a fresh cluster sees waits another 3 s while ``__consumer_offsets`` is created
  (JoinGroup answers "Not coordinator" until then; librdkafka retries), whatever the protocol's delay.
- With ``group.protocol=consumer`` librdkafka refuses ``session.timeout.ms``, ``heartbeat.interval.ms`` and
  ``partition.assignment.strategy`` ("defined broker side"; ``group.consumer.session.timeout.ms`` and
  ``group.consumer.heartbeat.interval.ms`` on the broker).
- Debian's kcat works as it is: produces idempotently, reads with and without ``-G``; it has no
  ``group.protocol`` (librdkafka 2.0.2), which the preloaded 2.16 accepts and which works there too.
- aiokafka's idempotent producer gets its producer id (tansu refuses InitProducerId).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from emostream.schemas import DeadLetter, ReviewItem, Tweet
from tests.conftest import run_cli
from tests.test_streaming import Stack

pytestmark = pytest.mark.integration

# The smallest session timeout that works on both brokers: Apache Kafka refuses one below its
# group.min.session.timeout.ms (6 s by default), and tansu then assigns partitions after 3 s instead of
# the 23 s librdkafka's default 45 s costs. max.poll.interval.ms stays at its default: it does not delay
# the join on tansu (see the module docstring). Kafka 4 assigns at once at any session.
GROUP_SETTINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "auto.offset.reset": "earliest"}

#: The brokers these clients are run against (conftest's session fixtures), by test id.
CLIENT_BROKERS = {"tansu": "broker", "kafka-4": "kafka_4"}


@dataclass(frozen=True)
class Broker:
    """Which broker a test runs on (a key of :data:`CLIENT_BROKERS`) and its bootstrap address."""

    name: str
    bootstrap: str


@pytest.fixture(params=list(CLIENT_BROKERS))
def client_broker(request: pytest.FixtureRequest) -> Broker:
    """Each broker of :data:`CLIENT_BROKERS` in turn (the test id says which)."""
    return Broker(request.param, request.getfixturevalue(CLIENT_BROKERS[request.param]))


@pytest.fixture
def stack(client_broker: Broker, trained_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(client_broker.bootstrap, trained_registry, tmp_path)
    yield running
    running.stop()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> list[Message]:
    """Send with an idempotent acks=all producer; the delivery reports. (`emostream ingest` asks for the same,
    but tansu refuses aiokafka's InitProducerId; librdkafka's, v4, gets a producer id.)"""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    delivered: list[Message] = []

    def report(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        delivered.append(message)

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=report)
    assert producer.flush(30) == 0
    assert len(delivered) == len(records)
    return delivered


def create_topic(bootstrap: str, partitions: int = 4) -> str:
    """A new topic of its own for one test (Kafka's test brokers create none on first use)."""
    topic = f"clients-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    return topic


@dataclass
class GroupRead:
    """What a fresh consumer group read: the records, and each assignment (seconds after subscribing, partitions)."""

    messages: list[Message]
    assignments: list[tuple[float, list[TopicPartition]]]

    @property
    def partitions(self) -> set[tuple[str, int]]:
        return {(p.topic, p.partition) for _, assigned in self.assignments for p in assigned}


def read_group(
    bootstrap: str, topics: list[str], expect: int, settings: dict | None = None, timeout: float = 30
) -> GroupRead:
    """Read `expect` records of `topics` in a fresh consumer group (`settings`: GROUP_SETTINGS unless given)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            **(GROUP_SETTINGS if settings is None else settings),
        }
    )
    started = time.monotonic()
    read = GroupRead([], [])

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        read.assignments.append((time.monotonic() - started, partitions))

    consumer.subscribe(topics, on_assign=on_assign)
    try:
        while len(read.messages) < expect and time.monotonic() - started < timeout:
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert not message.error(), message.error()
            read.messages.append(message)
        while (message := consumer.poll(1.0)) is not None:  # anything beyond `expect`?
            assert not message.error(), message.error()
            read.messages.append(message)
    finally:
        consumer.close()
    assert read.assignments, f"no partitions within {timeout} s"
    return read


def test_confluent_kafka_feeds_the_stream_and_reads_review_and_dead_letters(stack: Stack, small_data: Path) -> None:
    stack.env["EMOSTREAM_REVIEW_THRESHOLD"] = "1"  # every tweet goes to review: the topic's content is known
    texts = [line.rpartition(";")[0] for line in (small_data / "train.txt").read_text().splitlines()][:40]
    tweets = [Tweet(id=f"ck{i:03d}", text=text, brand=["acme", "globex"][i % 2]) for i, text in enumerate(texts)]
    stack.start_worker()
    records = [(t.id.encode(), t.model_dump_json().encode()) for t in tweets]
    malformed = [(b"bad", b"not json"), (b"bad", b'{"id": "x1"}')]
    delivered = produce(stack.bootstrap, stack.topic, records[:20] + malformed + records[20:])
    dead = {f"{m.topic()}/{m.partition()}/{m.offset()}".encode() for m in delivered if m.key() == b"bad"}

    review, dlq = f"{stack.topic}.review", f"{stack.topic}.dlq"
    read = read_group(stack.bootstrap, [review, dlq], len(tweets) + len(malformed))
    assigned_after = read.assignments[0][0]
    assert assigned_after < 10, assigned_after  # tansu: 3 s measured, 23 s at librdkafka's default session
    reviews = [m for m in read.messages if m.topic() == review]
    letters = [m for m in read.messages if m.topic() == dlq]
    assert sorted(m.key() for m in reviews) == sorted(t.id.encode() for t in tweets)  # keyed by tweet id
    assert all(ReviewItem.model_validate_json(m.value()).tweet.id == m.key().decode() for m in reviews)
    assert {m.key() for m in letters} == dead and len(letters) == len(dead)  # keyed topic/partition/offset
    for message in letters:
        letter = DeadLetter.model_validate_json(message.value())
        assert letter.source_key == message.key() and letter.error and letter.value in (b"not json", b'{"id": "x1"}')

    stack.wait_for_rows(len(tweets))
    stack.stop()
    result = run_cli(
        "sql",
        "SELECT tweet_id, brand FROM emotion_scores FINAL ORDER BY tweet_id",
        "--format",
        "csv",
        env={**stack.env, "EMOSTREAM_CLICKHOUSE_DSN": stack.dsn()},
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))[1:]
    assert rows == [[t.id, t.brand] for t in tweets]


#: Consumer groups on Kafka 4: librdkafka's classic protocol at its defaults (45 s session, which costs
#: 23 s on tansu), at the tests' 6 s, and KIP-848, where the broker sets session and heartbeat.
KAFKA_4_GROUPS = {
    "classic-defaults": {"auto.offset.reset": "earliest"},
    "classic-6s-session": GROUP_SETTINGS,
    "kip-848": {"group.protocol": "consumer", "auto.offset.reset": "earliest"},
}


@pytest.mark.parametrize("settings", list(KAFKA_4_GROUPS.values()), ids=list(KAFKA_4_GROUPS))
def test_consumer_group_gets_partitions_and_reads_on_kafka_4(kafka_4: str, settings: dict) -> None:
    topic = create_topic(kafka_4)
    records = [(f"k{i:02d}".encode(), f"record {i}".encode()) for i in range(20)]
    produce(kafka_4, topic, records)
    read = read_group(kafka_4, [topic], len(records), settings)
    assert read.partitions == {(topic, p) for p in range(4)}  # the only member holds every partition
    assert sorted((m.key(), m.value()) for m in read.messages) == records


@pytest.mark.parametrize(("key", "value"), [("session.timeout.ms", 6000), ("heartbeat.interval.ms", 1000)])
def test_kip_848_session_and_heartbeat_are_not_client_settings(key: str, value: int) -> None:
    """With ``group.protocol=consumer`` the broker sets them (``group.consumer.session.timeout.ms``, ...);
    librdkafka refuses the consumer outright, before it talks to any broker."""
    with pytest.raises(KafkaException, match="defined broker side"):
        Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "group.protocol": "consumer", key: value})


def wheel_librdkafka() -> Path | None:
    """The librdkafka that the confluent-kafka wheel bundles (Linux wheels: ``confluent_kafka.libs/``)."""
    import confluent_kafka

    found = sorted((Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs").glob("librdkafka-*.so.1"))
    return found[0] if found else None


def test_debian_kcat_produces_and_reads_in_a_group(client_broker: Broker) -> None:
    """Debian's kcat 1.7.1 links librdkafka 2.0.2. On Kafka 4 it works as it is. On tansu it cannot parse
    the ApiVersions v3 response ("Read underflow"); `-X api.version.request=false` does not help (any
    broker.version.fallback >= 0.10 sends the request anyway, and 0.9.0 breaks Produce and ListOffsets).
    The same kcat on the librdkafka 2.16 that the confluent-kafka wheel ships (LD_PRELOAD, same soname and
    ABI) produces and reads there."""
    broker = client_broker.bootstrap
    kcat = shutil.which("kcat")
    if not kcat:
        pytest.skip("needs Debian's kcat (apt-get install kcat)")
    env = dict(os.environ)
    if client_broker.name == "tansu":
        library = wheel_librdkafka()
        if not library:
            pytest.skip("kcat on tansu needs the librdkafka of a Linux confluent-kafka wheel")
        env["LD_PRELOAD"] = str(library)
    else:
        env.pop("LD_PRELOAD", None)  # Debian's own librdkafka 2.0.2
    topic = create_topic(broker)
    tweets = [Tweet(id=f"kc{i:02d}", text=f"tweet number {i}") for i in range(30)]
    base = [kcat, "-b", broker, "-X", "acks=all", "-X", "enable.idempotence=true"]
    lines = "".join(f"{t.id}\t{t.model_dump_json()}\n" for t in tweets)
    produced = subprocess.run(
        [*base, "-P", "-t", topic, "-K", "\t"], input=lines, env=env, capture_output=True, text=True, timeout=30
    )
    assert produced.returncode == 0, produced.stderr

    reader = Consumer({"bootstrap.servers": broker, "group.id": "unused", "enable.auto.commit": False})
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])  # no group: no join to wait
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 15
    while len(got) < len(tweets) and time.monotonic() < deadline:
        if (message := reader.poll(0.2)) is not None and not message.error():
            got[message.key()] = message.value()
    reader.close()
    assert got == {t.id.encode(): t.model_dump_json().encode() for t in tweets}

    settings = [f"-X{k}={v}" for k, v in GROUP_SETTINGS.items()]
    group = [kcat, "-b", broker, "-G", f"kcat-{uuid.uuid4().hex[:8]}", *settings, "-c", str(len(tweets)), "-q"]
    consumed = subprocess.run([*group, "-f", "%k\t%s\n", topic], env=env, capture_output=True, text=True, timeout=30)
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.splitlines()) == sorted(lines.splitlines())
