"""The worker end to end on real parts: a tansu broker, the ClickHouse engine (chDB), worker processes.

Each test gets its own topics, consumer group and chDB directory on one session-wide broker.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import os
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from emostream.schemas import LABELS, DeadLetter, ReviewItem
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.discovery import endpoint_file, read_state
from emostream.stream.web.endpoint import Endpoint
from tests.conftest import EMOSTREAM, run_cli
from tests.test_scoring import MALFORMED

pytestmark = pytest.mark.integration


class Stack:
    """Settings for one test: its topics, group and ClickHouse directory, and the worker processes."""

    def __init__(self, broker: str, registry: Path, tmp: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.tmp = tmp
        self.topic = f"tweets-{run}"
        self.env = {
            "EMOSTREAM_KAFKA_BOOTSTRAP": broker,
            "EMOSTREAM_REGISTRY": str(registry),
            "EMOSTREAM_HOME": str(tmp / "home"),
            "EMOSTREAM_TOPIC_TWEETS": self.topic,
            "EMOSTREAM_TOPIC_REVIEW": f"{self.topic}.review",
            "EMOSTREAM_TOPIC_DLQ": f"{self.topic}.dlq",
            "EMOSTREAM_GROUP_ID": f"group-{run}",
            "EMOSTREAM_PARTITIONS": "4",
            "EMOSTREAM_SESSION_TIMEOUT": "2",
            "EMOSTREAM_HEARTBEAT_INTERVAL": "0.5",
            "EMOSTREAM_MAX_BATCH": "32",
            "EMOSTREAM_REVIEW_THRESHOLD": "0.3",
        }
        self.bootstrap = broker
        self.workers: list[subprocess.Popen] = []

    def dsn(self, name: str = "ch") -> str:
        return f"chdb://{self.tmp / name}"

    def start_worker(self, ch: str = "ch") -> subprocess.Popen:
        env = {**os.environ, **self.env, "EMOSTREAM_CLICKHOUSE_DSN": self.dsn(ch)}
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen([str(EMOSTREAM), "worker"], env=env, stdout=log, stderr=log)
        self.workers.append(worker)
        endpoint = endpoint_file(self.tmp / ch)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = read_state(endpoint)
            if state and state["pid"] == worker.pid:
                return worker
            assert worker.poll() is None, self.logs()
            time.sleep(0.1)
        raise AssertionError("worker did not start:\n" + self.logs())

    def endpoint(self, ch: str = "ch") -> Endpoint:
        endpoint = Endpoint.find(self.tmp / ch)
        assert endpoint, "no worker serves " + ch
        return endpoint

    def sql(self, query: str, ch: str = "ch") -> list[list]:
        return self.endpoint(ch).sql(query).rows

    def wait_for_rows(self, n: int, ch: str = "ch", timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sql("SELECT uniqExact(tweet_id) FROM emotion_scores", ch)[0][0] >= n:
                return
            time.sleep(0.5)
        raise AssertionError(f"fewer than {n} rows after {timeout} s:\n" + self.logs())

    def ingest(self, path: Path, *args: str) -> subprocess.CompletedProcess:
        return run_cli("ingest", path, *args, env=self.env)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGINT)
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("worker-*.log")))


@pytest.fixture
def stack(broker: str, trained_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    """A stack on the embedded broker, for what does not depend on the broker (the web side, writes failing)."""
    running = Stack(broker, trained_registry, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def core_broker(broker: str) -> str:
    """The broker of the streaming-core tests (``any_stack``): tansu here. ``test_streaming_on_kafka_4.py``
    and ``test_streaming_on_kafka_3_9.py`` import the same tests and set Apache Kafka: files of their own,
    so that pytest-xdist (``--dist loadfile``) runs them beside this one rather than after it."""
    return broker


@pytest.fixture
def any_stack(core_broker: str, trained_registry: Path, tmp_path: Path) -> Iterator[Stack]:
    """A stack on the file's broker, for the streaming core (run on tansu, Apache Kafka 4 and 3.9)."""
    running = Stack(core_broker, trained_registry, tmp_path)
    yield running
    running.stop()


#: The tests that run on every broker: the streaming core.
CORE_TESTS = (
    "test_every_tweet_lands_once_with_the_scores_predict_gives",
    "test_malformed_records_go_to_the_dead_letter_topic_and_scoring_goes_on",
    "test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice",
    "test_two_workers_share_the_partitions",
    "test_a_worker_whose_writes_fail_stops_in_time_and_commits_nothing",
)


def tweets_file(small_data: Path, path: Path, n: int) -> tuple[Path, list[str]]:
    texts = [line.rpartition(";")[0] for line in (small_data / "train.txt").read_text().splitlines()][:n]
    with path.open("w") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"t{i:04d}", "text": text, "brand": ["acme", "globex"][i % 2]}) + "\n")
    return path, texts


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20, part: str = "value") -> list[bytes]:
    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=f"reader-{uuid.uuid4().hex[:6]}"
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + timeout
            while len(values) < expect and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values += [getattr(r, part) for r in records]
            for records in (await consumer.getmany(timeout_ms=1000)).values():  # anything beyond `expect`?
                values += [getattr(r, part) for r in records]
        finally:
            await consumer.stop()
        return values

    return asyncio.run(consume())


def send_raw(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=b"bad")
        finally:
            await producer.stop()

    asyncio.run(send())


def test_every_tweet_lands_once_with_the_scores_predict_gives(any_stack: Stack, small_data: Path) -> None:
    # fp32: a row's scores do not depend on its batch neighbours (dynamic int8 moves them by ~1e-4)
    any_stack.env["EMOSTREAM_RUNTIME"] = "torch-fp32"
    path, texts = tweets_file(small_data, any_stack.tmp / "tweets.jsonl", 300)
    any_stack.start_worker()
    result = any_stack.ingest(path)
    assert result.returncode == 0, result.stderr
    assert "sent 300 tweets" in result.stdout
    any_stack.wait_for_rows(300)
    rows = any_stack.sql(
        f"SELECT tweet_id, brand, model_version, label, confidence, {', '.join(LABELS)} "
        "FROM emotion_scores FINAL ORDER BY tweet_id"
    )
    assert [r[0] for r in rows] == [f"t{i:04d}" for i in range(300)]
    predicted = run_cli("predict", stdin="\n".join(texts) + "\n", env=any_stack.env)
    assert predicted.returncode == 0, predicted.stderr
    for row, line in zip(rows, predicted.stdout.splitlines(), strict=True):
        expected = json.loads(line)
        assert row[2] == expected["model_version"] and row[3] == expected["label"]
        assert row[5:] == pytest.approx([expected[name] for name in LABELS], abs=1e-5)
    assert {r[1] for r in rows} == {"acme", "globex"}
    # review routing reads the rows' (calibrated) confidence: under the threshold, or the salted-hash sample of
    # the confident ones, and nothing else
    from emostream.stream.worker.review_policy import ReviewRouting, in_sample

    share = ReviewRouting().review_sample
    unsure = {r[0] for r in rows if r[4] < 0.3}
    sampled = {r[0] for r in rows if r[4] >= 0.3 and in_sample(r[0], share)}
    assert unsure | sampled
    expected = len(unsure) + len(sampled)
    topic = f"{any_stack.topic}.review"
    reviews = [ReviewItem.model_validate_json(v) for v in read_topic(any_stack.bootstrap, topic, expected)]
    assert sorted(item.tweet.id for item in reviews) == sorted(unsure | sampled)
    for item in reviews:
        assert item.reason.startswith("confidence") == (item.tweet.id in unsure)
        assert (item.score.confidence < 0.3) == (item.tweet.id in unsure)


def test_malformed_records_go_to_the_dead_letter_topic_and_scoring_goes_on(any_stack: Stack, small_data: Path) -> None:
    path, _ = tweets_file(small_data, any_stack.tmp / "tweets.jsonl", 50)
    any_stack.start_worker()
    bad = [value for value, _ in MALFORMED]
    send_raw(any_stack.bootstrap, any_stack.topic, bad[:5])
    assert any_stack.ingest(path).returncode == 0
    send_raw(any_stack.bootstrap, any_stack.topic, bad[5:])
    any_stack.wait_for_rows(50)
    letters = [
        DeadLetter.model_validate_json(v) for v in read_topic(any_stack.bootstrap, f"{any_stack.topic}.dlq", len(bad))
    ]
    assert sorted(letter.value or b"" for letter in letters) == sorted(value or b"" for value in bad)
    assert all(letter.error and letter.topic == any_stack.topic for letter in letters)
    keys = read_topic(any_stack.bootstrap, f"{any_stack.topic}.dlq", len(bad), part="key")
    assert sorted(keys) == sorted(letter.source_key for letter in letters)  # keyed by source: repeats collapse
    # what failed and why, in SQL: one row per source record
    rows = any_stack.sql(
        f"SELECT topic, partition, offset, error FROM dead_letters FINAL WHERE topic = '{any_stack.topic}'"
    )
    assert sorted((r[1], r[2]) for r in rows) == sorted((letter.partition, letter.offset) for letter in letters)
    assert all(r[3] for r in rows)
    assert any_stack.sql("SELECT count() FROM emotion_scores FINAL")[0][0] == 50


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(any_stack: Stack, small_data: Path) -> None:
    path, _ = tweets_file(small_data, any_stack.tmp / "tweets.jsonl", 400)
    first = any_stack.start_worker()
    ingest = subprocess.Popen(
        [str(EMOSTREAM), "ingest", str(path), "--rate", "100"],
        env={**os.environ, **any_stack.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while any_stack.sql("SELECT count() FROM emotion_scores")[0][0] < 50:  # mid-stream: some scored, most not
        assert time.monotonic() < deadline, any_stack.logs()
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    any_stack.start_worker()
    assert ingest.wait(60) == 0
    any_stack.wait_for_rows(400)
    time.sleep(3)  # anything re-delivered after the restart has had time to land
    total, distinct = any_stack.sql("SELECT count(), uniqExact(tweet_id) FROM emotion_scores FINAL")[0]
    assert (total, distinct) == (400, 400)
    per_brand = any_stack.sql("SELECT brand, count() FROM emotion_scores FINAL GROUP BY brand ORDER BY brand")
    assert per_brand == [["acme", 200], ["globex", 200]]


def test_two_workers_share_the_partitions(any_stack: Stack, small_data: Path) -> None:
    path, _ = tweets_file(small_data, any_stack.tmp / "tweets.jsonl", 400)
    any_stack.start_worker("ch-a")
    any_stack.start_worker("ch-b")  # a second process needs its own chDB directory; a server has no such limit
    time.sleep(3)  # both in the group before tweets arrive
    assert any_stack.ingest(path).returncode == 0
    deadline = time.monotonic() + 120
    while True:
        counts = [any_stack.sql("SELECT uniqExact(tweet_id) FROM emotion_scores", ch)[0][0] for ch in ("ch-a", "ch-b")]
        if sum(counts) >= 400 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    any_stack.stop()
    ids: dict[str, set[str]] = {}
    for ch in ("ch-a", "ch-b"):
        result = run_cli(
            "sql",
            "SELECT DISTINCT tweet_id FROM emotion_scores",
            "--format",
            "csv",
            env={**any_stack.env, "EMOSTREAM_CLICKHOUSE_DSN": any_stack.dsn(ch)},
        )
        assert result.returncode == 0, result.stderr
        ids[ch] = {row[0] for row in csv.reader(io.StringIO(result.stdout))} - {"tweet_id"}
    assert ids["ch-a"] and ids["ch-b"], counts
    assert len(ids["ch-a"] | ids["ch-b"]) == 400


def http(url: str, method: str = "POST", body: bytes | None = b"SELECT 1", **headers: str) -> int:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_endpoint_answers_only_with_the_credential(stack: Stack) -> None:
    stack.start_worker()
    endpoint = stack.endpoint()
    token_path = endpoint_file(stack.tmp / "ch").with_suffix(".token")
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    bearer = f"Bearer {endpoint.token}"
    assert http(f"{endpoint.url}/sql", "GET", None) == 401
    assert http(f"{endpoint.url}/sql?q=SELECT%201", "GET", None, Authorization=bearer) == 405  # POST only
    assert http(f"{endpoint.url}/sql") == 401
    assert http(f"{endpoint.url}/sql", Authorization="Bearer not-the-token") == 401
    assert http(f"{endpoint.url}/sql", Authorization=bearer, Origin="http://evil.example") == 403
    assert http(f"{endpoint.url}/sql", Authorization=bearer, Host="evil.example") == 403
    for faust_page in ("/", "/router/", "/table/", "/healthz"):  # Faust's own pages are behind it too
        assert http(f"{endpoint.url}{faust_page}", "GET", None) == 401, faust_page
    assert http(f"{endpoint.url}/sql", Authorization=bearer) == 200
    assert http(f"{endpoint.url}/sql", Authorization=bearer, body=b"DROP TABLE emotion_scores") == 400
    assert stack.sql("SELECT count() FROM system.tables WHERE name = 'emotion_scores'") == [[1]]


def test_a_slow_query_does_not_hold_up_the_stream(stack: Stack, small_data: Path) -> None:
    path, _ = tweets_file(small_data, stack.tmp / "tweets.jsonl", 400)
    stack.start_worker()
    ingest = subprocess.Popen(
        [str(EMOSTREAM), "ingest", str(path), "--rate", "100"], env={**os.environ, **stack.env}, stderr=subprocess.PIPE
    )
    stack.wait_for_rows(20)  # the stream is flowing
    started = time.time()
    assert stack.sql("SELECT sleep(3)") == [[0]]  # three seconds on the SQL thread
    finished = time.time()
    assert ingest.wait(60) == 0
    stack.wait_for_rows(400)
    visible = [
        row[0]
        for row in stack.sql(
            "SELECT DISTINCT toUnixTimestamp64Milli(inserted_at) / 1000 AS t FROM emotion_scores ORDER BY t"
        )
    ]
    during = [started] + [t for t in visible if started < t < finished] + [finished]
    # Batches kept landing while the statement ran: with one shared thread there would be none for 3 s.
    assert len(during) >= 5, (during, visible[:5])
    assert max(b - a for a, b in itertools.pairwise(during)) < 1.5, during


def failing_table(directory: Path) -> None:
    """``emotion_scores`` that refuses every insert as a server does when merges fall behind (TOO_MANY_PARTS,
    an outage: nothing about the rows), on the real engine, for as long as the worker runs, while its
    start-up (the idempotent DDL) still succeeds."""
    sink = ClickHouseSink(f"chdb://{directory}")
    sink.apply_schema()
    sink.client.command("INSERT INTO emotion_scores (tweet_id, model_version) VALUES ('seed', 'v0000')")
    sink.client.command("ALTER TABLE emotion_scores MODIFY SETTING parts_to_throw_insert = 1")
    sink.close()


def wait_for_log(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, path.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def test_a_worker_whose_writes_fail_stops_in_time_and_commits_nothing(any_stack: Stack, small_data: Path) -> None:
    path, _ = tweets_file(small_data, any_stack.tmp / "tweets.jsonl", 60)
    failing_table(any_stack.tmp / "broken")
    any_stack.env["EMOSTREAM_SHUTDOWN_TIMEOUT"] = "8"
    worker = any_stack.start_worker("broken")
    assert any_stack.ingest(path).returncode == 0
    wait_for_log(any_stack.tmp / "worker-0.log", "ClickHouse write of")
    worker.send_signal(signal.SIGTERM)
    started = time.monotonic()
    worker.wait(30)
    assert time.monotonic() - started < 8 + 2, any_stack.logs()  # within the shutdown timeout (plus start-up of exit)
    assert "uncommitted" in any_stack.logs()
    any_stack.start_worker("ch")  # same group, a ClickHouse that works: every tweet is still there to score
    any_stack.wait_for_rows(60)
    assert any_stack.sql("SELECT count() FROM emotion_scores FINAL") == [[60]]


def start_up(home: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(EMOSTREAM), "up"], env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 90
    while not ((state := read_state(endpoint_file(home / "clickhouse"))) and state["pid"] == process.pid):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    return process


@pytest.mark.parametrize("second_signal", [False, True], ids=["one Ctrl-C", "two Ctrl-C"])
def test_up_stops_in_time_with_its_broker_while_writes_fail(
    trained_registry: Path, small_data: Path, tmp_path: Path, second_signal: bool
) -> None:
    home = tmp_path / "home"
    failing_table(home / "clickhouse")
    env = {
        "EMOSTREAM_HOME": str(home),
        "EMOSTREAM_REGISTRY": str(trained_registry),
        "EMOSTREAM_SESSION_TIMEOUT": "2",
        "EMOSTREAM_HEARTBEAT_INTERVAL": "0.5",
        # one Ctrl-C must finish well within its limit; two must not wait for it at all
        "EMOSTREAM_SHUTDOWN_TIMEOUT": "60" if second_signal else "10",
    }
    up = start_up(home, env, tmp_path / "up.log")
    bootstrap = str(read_state(home / "broker.json")["bootstrap"])  # type: ignore[index]
    path, _ = tweets_file(small_data, tmp_path / "tweets.jsonl", 30)
    assert run_cli("ingest", path, env=env).returncode == 0
    wait_for_log(tmp_path / "up.log", "ClickHouse write of")
    up.send_signal(signal.SIGINT)
    started = time.monotonic()
    if second_signal:
        time.sleep(0.5)
        up.send_signal(signal.SIGINT)
    up.wait(70)
    elapsed = time.monotonic() - started
    assert elapsed < (3 if second_signal else 10 + 2), (elapsed, (tmp_path / "up.log").read_text()[-3000:])
    host, port = bootstrap.rsplit(":", 1)
    with pytest.raises(OSError):  # the broker `up` started is gone too
        socket.create_connection((host, int(port)), timeout=2).close()
    assert not (home / "broker.json").exists() and not endpoint_file(home / "clickhouse").exists()


def committed_total(bootstrap: str, group: str, topic: str, partitions: int = 4) -> int:
    """The group's committed offsets on ``topic``, summed: the records it will never be given again."""

    async def read() -> int:
        from aiokafka import TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
        finally:
            await consumer.stop()
        return sum(offset or 0 for offset in offsets)

    return asyncio.run(read())


def test_a_row_clickhouse_refuses_is_a_dead_letter_and_the_stream_goes_on(stack: Stack, small_data: Path) -> None:
    """A ClickHouse error for one row of a batch (a constraint it violates): the batch's other rows are
    written, that row's record is a dead letter with ClickHouse's error, and every offset is committed."""
    path, _ = tweets_file(small_data, stack.tmp / "tweets.jsonl", 120)
    sink = ClickHouseSink(stack.dsn())
    sink.apply_schema()
    sink.client.command("ALTER TABLE emotion_scores ADD CONSTRAINT refuse_one CHECK tweet_id != 't0042'")
    sink.close()
    stack.env["EMOSTREAM_MAX_BATCH"] = "64"
    stack.start_worker()
    assert stack.ingest(path).returncode == 0
    stack.wait_for_rows(119)
    (letter,) = [
        DeadLetter.model_validate_json(v) for v in read_topic(stack.bootstrap, f"{stack.topic}.dlq", 1, timeout=30)
    ]
    assert (
        b'"t0042"' in (letter.value or b"") and "VIOLATED_CONSTRAINT" in letter.error and "refuse_one" in letter.error
    )
    assert stack.sql("SELECT offset, error FROM dead_letters FINAL") == [[letter.offset, letter.error]]
    ids = {row[0] for row in stack.sql("SELECT tweet_id FROM emotion_scores FINAL")}
    assert ids == {f"t{i:04d}" for i in range(120)} - {"t0042"}
    deadline = time.monotonic() + 30  # Faust commits once a second
    while (committed := committed_total(stack.bootstrap, stack.env["EMOSTREAM_GROUP_ID"], stack.topic)) < 120:
        assert time.monotonic() < deadline, (committed, stack.logs())
        time.sleep(1)
    assert committed == 120  # nothing behind the refused row is held back, nothing past the topic's end
