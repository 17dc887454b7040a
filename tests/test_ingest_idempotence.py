"""`emostream ingest`'s producer is idempotent on Apache Kafka: a send retried after a lost response lands once.

A small TCP proxy sits between the client and a real Kafka 4 node (the node advertises the proxy's port, so
every connection a client opens after bootstrap goes through it too). Armed, it forwards the next Produce
request to the broker, waits until the broker has answered (the batch is written), and then closes the
client's connection instead of passing the answer on: the client sees a broken connection and sends the
same batch again. aiokafka retries a batch that failed with a retriable error (a closed connection is
one) after ``retry_backoff_ms``, the idempotent producer with the batch's producer id, epoch and sequence
unchanged, so the broker recognises the repeat and answers with the first write's offset; a producer
without idempotence sends the same bytes with no producer id, and the broker appends them a second time.
The control test shows that second copy: without it, the first test could pass on a proxy that drops
nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from emostream.stream.kafka.apache_kafka import KafkaCluster
from emostream.stream.kafka.ingest import start_producer
from emostream.stream.kafka.topics import ensure_topics
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

PRODUCE = 0  # the Produce request's api_key
REFUSAL = "refused an idempotent producer"  # start_producer's log line when it falls back


class DroppingProxy:
    """A TCP proxy for the Kafka protocol, in a thread of its own, that can lose one Produce response.

    Each frame is a 4-byte big-endian length and the message; a request's header starts with api_key
    (int16), api_version (int16) and correlation_id (int32), a response's with the correlation_id. After
    :meth:`drop_next_produce`, the next Produce request is forwarded, and when the broker's response to it
    (by correlation id) arrives, the proxy closes both sides of that connection instead of passing it on.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.upstream: tuple[str, int] | None = None
        self.produce_requests = 0  # every Produce request forwarded, the retries included
        self.dropped = 0  # responses the broker sent that the client never got
        self._armed = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kafka-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, upstream_port: int) -> None:
        """Serve, forwarding to the broker on ``upstream_port`` (connections to the broker open as clients come)."""
        self.upstream = ("127.0.0.1", upstream_port)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._connection, sock=self._listener)

    def drop_next_produce(self) -> None:
        with self._lock:
            self._armed += 1

    def _take_arm(self) -> bool:
        with self._lock:
            if self._armed:
                self._armed -= 1
                return True
            return False

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        assert self.upstream is not None
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        swallow: set[int] = set()

        async def requests() -> None:  # client -> broker
            while True:
                frame = await _read_frame(client_reader)
                api_key, _version, correlation_id = struct.unpack_from(">hhi", frame, 4)
                if api_key == PRODUCE:
                    self.produce_requests += 1
                    if self._take_arm():
                        swallow.add(correlation_id)  # before forwarding: the answer cannot come first
                broker_writer.write(frame)
                await broker_writer.drain()

        async def responses() -> None:  # broker -> client
            while True:
                frame = await _read_frame(broker_reader)
                (correlation_id,) = struct.unpack_from(">i", frame, 4)
                if correlation_id in swallow:  # the broker has written the batch; the client never hears it
                    self.dropped += 1
                    return
                client_writer.write(frame)
                await client_writer.drain()

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(responses())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)  # a closed side ends its pump with an error
            for writer in (client_writer, broker_writer):
                writer.transport.abort()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._listener.close()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = await reader.readexactly(4)
    return size + await reader.readexactly(struct.unpack(">i", size)[0])


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DroppingProxy]:
    """The proxy, in front of one Kafka 4 node (KRaft, combined broker and controller) that advertises it.

    Only the PLAINTEXT listener's advertised address is overridden: in combined mode the node registers
    with its own controller over the CONTROLLER listener, and one node has no followers fetching over the
    inter-broker listener, so the node starts as usual and only clients use the advertised address.
    """
    proxy = DroppingProxy()
    cluster = KafkaCluster(
        "4",
        directory=tmp_path_factory.mktemp("kafka-4-proxied"),
        settings={"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.port}"},
    )
    proxy.start(cluster.nodes[0].port)  # before the cluster: its start-up check already connects through it
    try:
        with cluster:
            yield proxy
    finally:
        proxy.close()


def new_topic(bootstrap: str) -> str:
    topic = f"idem-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [topic], 1))
    return topic


def read_keys(bootstrap: str, topic: str) -> list[bytes]:
    """Every record's key on the topic's one partition, in offset order, up to its end offset now."""

    async def read() -> list[bytes]:
        partition = TopicPartition(topic, 0)
        # earliest by configuration: seek_to_beginning() after assign() races the fetcher's reset to "latest"
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([partition])
            end = (await consumer.end_offsets([partition]))[partition]
            keys: list[bytes] = []
            for _ in range(60):  # a bound, so that a broken read fails instead of hanging
                if await consumer.position(partition) >= end:
                    return keys
                for records in (await consumer.getmany(partition, timeout_ms=1000)).values():
                    keys += [record.key for record in records]
            raise AssertionError(f"read {len(keys)} of {end} records of {topic}")
        finally:
            await consumer.stop()

    return asyncio.run(read())


def records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"t{i:03d}".encode(), f'{{"id": "t{i:03d}", "text": "tweet {i}"}}'.encode()) for i in range(n)]


async def send_all(producer: AIOKafkaProducer, topic: str, batch: list[tuple[bytes, bytes]]) -> list[int]:
    """Queue every record, wait for all of them, stop the producer: the offsets the broker reported."""
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in batch]
        return [metadata.offset for metadata in await asyncio.gather(*pending)]
    finally:
        await producer.stop()


def test_a_retried_send_lands_once_with_the_ingest_producer(
    proxy: DroppingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    topic = new_topic(proxy.bootstrap)
    sent = records(20)
    produced_before, dropped_before = proxy.produce_requests, proxy.dropped
    proxy.drop_next_produce()

    async def ingest() -> list[int]:
        producer = await start_producer(proxy.bootstrap)
        # Kafka granted a producer id: this is the idempotent producer, not the fallback
        txn_manager = producer._txn_manager
        assert txn_manager is not None and txn_manager.has_pid() and txn_manager.producer_id >= 0
        # and every connection after bootstrap goes through the proxy
        assert producer.client.cluster.broker_metadata(1).port == proxy.port
        return await send_all(producer, topic, sent)

    with caplog.at_level(logging.INFO, logger="emostream.ingest"):
        offsets = asyncio.run(ingest())
    assert not [r for r in caplog.records if REFUSAL in r.getMessage()]
    assert proxy.dropped - dropped_before == 1  # the broker's answer to the first send was lost...
    assert proxy.produce_requests - produced_before >= 2  # ...so the client sent the batch again...
    keys = read_keys(proxy.bootstrap, topic)
    assert keys == [key for key, _ in sent]  # ...and the broker kept it once, in order,
    assert offsets == list(range(len(sent)))  # answering the retry with the first write's offsets


def test_without_idempotence_the_same_retry_duplicates(proxy: DroppingProxy) -> None:
    """The control: the drop above really causes a resend that a plain acks=all producer turns into a copy."""
    topic = new_topic(proxy.bootstrap)
    sent = records(20)
    dropped_before = proxy.dropped
    proxy.drop_next_produce()

    async def ingest() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=proxy.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        assert producer._txn_manager is None  # no producer id: the broker cannot tell a resend from a new batch
        return await send_all(producer, topic, sent)

    offsets = asyncio.run(ingest())
    assert proxy.dropped - dropped_before == 1
    keys = read_keys(proxy.bootstrap, topic)
    assert set(keys) == {key for key, _ in sent}
    # The dropped batch's records (all 20, unless linger split them) are on the topic twice, back to back:
    # the lost write at 0.., then the retry, whose offsets are the ones the client was told.
    copies = len(keys) - len(sent)
    assert copies > 0, "the retried batch was not duplicated: the proxy dropped nothing that mattered"
    assert offsets[0] == copies
    assert keys[:copies] == keys[copies : 2 * copies] == [key for key, _ in sent[:copies]]


def test_ingest_cli_survives_a_lost_response_without_duplicates(proxy: DroppingProxy, tmp_path: Path) -> None:
    topic = new_topic(proxy.bootstrap)
    path = tmp_path / "tweets.jsonl"
    path.write_text("".join(value.decode() + "\n" for _, value in records(30)))
    dropped_before = proxy.dropped
    proxy.drop_next_produce()
    env = {"EMOSTREAM_KAFKA_BOOTSTRAP": proxy.bootstrap, "EMOSTREAM_HOME": str(tmp_path / "home")}
    result = run_cli("ingest", path, "--topic", topic, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sent 30 tweets" in result.stdout
    assert REFUSAL not in result.stderr
    assert proxy.dropped - dropped_before == 1
    assert collections.Counter(read_keys(proxy.bootstrap, topic)) == {key: 1 for key, _ in records(30)}


def test_on_tansu_start_producer_falls_back_and_still_sends(
    broker: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    topic = new_topic(broker)

    async def ingest() -> list[int]:
        producer = await start_producer(broker)
        assert producer._txn_manager is None  # the plain acks=all producer
        return await send_all(producer, topic, records(5))

    with caplog.at_level(logging.WARNING, logger="emostream.ingest"):
        assert asyncio.run(ingest()) == list(range(5))
    assert [r.levelno for r in caplog.records if REFUSAL in r.getMessage()] == [logging.WARNING]
    assert read_keys(broker, topic) == [key for key, _ in records(5)]
    # the CLI says so on stderr (what the Kafka CLI test above checks is absent)
    path = tmp_path / "tweets.jsonl"
    path.write_text("".join(value.decode() + "\n" for _, value in records(5)))
    env = {"EMOSTREAM_KAFKA_BOOTSTRAP": broker, "EMOSTREAM_HOME": str(tmp_path / "home")}
    result = run_cli("ingest", path, "--topic", topic, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert REFUSAL in result.stderr and "sent 5 tweets" in result.stdout
