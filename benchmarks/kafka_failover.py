"""A broker killed under load: a three-node Apache Kafka cluster, a live stream, a leader SIGKILLed, a rolling restart.

What a user's cluster goes through, on loopback:

1. Apache Kafka (4.x by default, KRaft, every node broker and controller), ``--brokers`` nodes; the worker
   creates its topics with replication factor 3 and ``min.insync.replicas=2`` (``EMOSTREAM_REPLICATION_FACTOR``,
   ``EMOSTREAM_MIN_INSYNC_REPLICAS``), so an acks=all write survives one broker down and is never acknowledged
   by one broker alone;
2. one ``emostream worker`` process (real model, ClickHouse engine in chDB) and ``emostream ingest`` sending
   real tweets (``wassa2017``) at ``--rate`` per second, plus ``--malformed`` hostile records sent while a
   broker is down (each must end as a dead letter);
3. once a quarter of the tweets are scored, the leader of the busiest partition of ``tweets`` is SIGKILLed
   (no controlled shutdown: the controller notices only when its session expires) and started again
   ``--down`` seconds later; once every partition is fully replicated again, a rolling restart: each node
   in turn stopped with SIGTERM (a controlled shutdown moves its leaderships first), started, and waited for
   until every replica is back in sync;
4. then every tweet must be in ``emotion_scores`` exactly once, every review item the worker wrote to
   ``review_queue`` must be on ``tweets.review``, every hostile record on ``tweets.dlq`` and in
   ``dead_letters``, and the worker must still be the process started in step 2 (never restarted by hand).

``stall_seconds``: for each step, the longest time between two successive batches' rows becoming visible
in ClickHouse (``inserted_at``) from the step's start until the stream is flowing again; ``baseline`` is
the same measured before the kill, under the same load.

Usage: python benchmarks/kafka_failover.py [--out failover.json] [--version 4] [--n 4000] [--rate 40]
Needs Java 17+ and Maven (the broker's jars come from Maven Central the first time, then from the cache).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emostream.stream.discovery import endpoint_file, read_state  # noqa: E402
from emostream.stream.kafka.apache_kafka import KafkaCluster, KafkaNode  # noqa: E402
from emostream.stream.web.endpoint import Endpoint  # noqa: E402

WASSA = ROOT.parent / "shared" / "data" / "wassa2017"
TOPIC, REVIEW, DLQ = "tweets", "tweets.review", "tweets.dlq"
#: Records no worker can score, each a different way (each must end as one dead letter).
MALFORMED: list[bytes] = [
    b"not json",
    b"{}",
    b'{"id": "", "text": "empty id"}',
    b'{"id": "m-3"}',
    b"[1, 2, 3]",
    b'{"id": "m-5", "text": 12}',
    b"\xff\xfe\xfd",
    b'{"id": "m-7", "text": "x", "created_at": "9999-12-31T23:59:59Z"}',
    b'{"id": "m-8", "text": "' + b"a" * 50 + b'", "brand": ' + b"[" * 200 + b"]" * 200 + b"}",
    b"null",
    b'"just a string"',
    b'{"id": "m-11", "text": "x", "created_at": "NaN"}',
]
console = Console(stderr=True)


def read_tweets(n: int) -> list[dict[str, str]]:
    """``n`` real tweets (wassa2017 train then dev, cycled with fresh ids if ``n`` is larger), as ingest's JSONL."""
    texts: list[str] = []
    for name in ("train.tsv", "dev.tsv"):
        lines = (WASSA / name).read_text(encoding="utf-8").splitlines()[1:]
        texts += [line.split("\t")[1] for line in lines if line.count("\t") >= 2]
    if not texts:
        raise SystemExit(f"no tweets in {WASSA}")
    brands = ("acme", "globex", "initech")
    return [{"id": f"f{i:05d}", "text": texts[i % len(texts)], "brand": brands[i % 3]} for i in range(n)]


async def partition_state(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], tuple[int, list[int], list[int]]]:
    """(topic, partition) -> (leader, replicas, in-sync replicas), from the cluster's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        state = {}
        for topic in await admin.describe_topics(topics):
            for p in topic["partitions"]:
                state[(topic["topic"], p["partition"])] = (p["leader"], list(p["replicas"]), list(p["isr"]))
        return state
    finally:
        await admin.close()


def fully_replicated(bootstrap: str, topics: list[str]) -> bool:
    """Whether every partition of ``topics`` has a leader and all its replicas in sync."""
    try:
        state = asyncio.run(partition_state(bootstrap, topics))
    except Exception:  # metadata unavailable mid-failover: not replicated yet
        return False
    return bool(state) and all(leader >= 0 and set(isr) == set(rep) for leader, rep, isr in state.values())


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> list[bytes]:
    """Every record's value on ``topic`` from the beginning to its end offsets (no group)."""
    # earliest by configuration, not seek_to_beginning() after assign(): that races the fetcher's own reset
    # to the default "latest", and a partition reset late reads as already at its end (seen here)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value or b"" for r in records]
    finally:
        await consumer.stop()
    return values


async def send_malformed(bootstrap: str, records: list[bytes]) -> None:
    """The hostile records, idempotent acks=all, while a broker is down (they must still be written once)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, value in enumerate(records):
            await producer.send_and_wait(TOPIC, value, key=f"bad-{i}".encode())
    finally:
        await producer.stop()


def wait(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.25) -> float:
    """Poll ``condition`` until true; the seconds it took. RuntimeError naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - started


class Drill:
    """The cluster, the worker, the stream and the clock of each step."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.cluster = KafkaCluster(args.version, args.brokers, directory=tmp / "kafka")
        self.replicas = min(3, args.brokers)
        self.steps: list[dict[str, Any]] = []
        self.worker: subprocess.Popen[bytes] | None = None
        self.ingest: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "EMOSTREAM_KAFKA_BOOTSTRAP": self.cluster.bootstrap,
            "EMOSTREAM_CLICKHOUSE_DSN": f"chdb://{self.tmp / 'ch'}",
            "EMOSTREAM_HOME": str(self.tmp / "home"),
            "EMOSTREAM_PARTITIONS": str(self.args.partitions),
            "EMOSTREAM_REPLICATION_FACTOR": str(self.replicas),
            "EMOSTREAM_MIN_INSYNC_REPLICAS": str(min(2, self.replicas)),
            "EMOSTREAM_GROUP_ID": f"failover-{uuid.uuid4().hex[:6]}",
        }

    def start_worker(self) -> None:
        log = (self.tmp / "worker.log").open("wb")
        command = [sys.executable, "-m", "emostream", "worker"]
        self.worker = subprocess.Popen(command, env=self.env(), stdout=log, stderr=log)
        log.close()
        worker = self.worker

        def announced() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}:\n{self.worker_log()}")
            state = read_state(endpoint_file(self.tmp / "ch"))
            return bool(state and state["pid"] == worker.pid)

        wait(announced, 120, "the worker did not start")

    def worker_log(self) -> str:
        return (self.tmp / "worker.log").read_text(errors="replace")[-3000:]

    def sql(self, query: str) -> list[list[Any]]:
        endpoint = Endpoint.find(self.tmp / "ch")
        if endpoint is None:
            raise RuntimeError("the worker's endpoint is gone:\n" + self.worker_log())
        return endpoint.sql(query).rows

    def scored(self) -> int:
        return int(self.sql("SELECT uniqExact(tweet_id) FROM emotion_scores")[0][0])

    def busiest_leader(self) -> tuple[KafkaNode, int]:
        """The node leading the partition of ``tweets`` with the most records, and that partition."""
        ends = asyncio.run(end_offsets(self.cluster.bootstrap, TOPIC, self.args.partitions))
        busiest = max(ends, key=ends.__getitem__)
        state = asyncio.run(partition_state(self.cluster.bootstrap, [TOPIC]))
        return self.cluster.node(state[(TOPIC, busiest)][0]), busiest

    def step(self, name: str, action: Callable[[], dict[str, Any]]) -> None:
        started = time.time()
        console.print(f"[bold]{name}[/bold] ...")
        detail = action()
        recovered = wait(
            lambda: fully_replicated(self.cluster.bootstrap, [TOPIC, REVIEW, DLQ]), 180, f"{name}: replicas in sync"
        )
        ended = time.time()
        sending = self.ingest is not None and self.ingest.poll() is None
        self.steps.append({"step": name, "started": started, "ended": ended, "under_load": sending, **detail})
        console.print(f"  done in {ended - started:.1f} s (replicas in sync {recovered:.1f} s after); {detail}")

    def kill_leader(self) -> dict[str, Any]:
        node, partition = self.busiest_leader()
        self.cluster.kill_node(node)
        killed_at = time.monotonic()
        asyncio.run(send_malformed(self.cluster.bootstrap, MALFORMED[: self.args.malformed]))
        time.sleep(max(0.0, self.args.down - (time.monotonic() - killed_at)))
        new_leader = asyncio.run(partition_state(self.cluster.bootstrap, [TOPIC]))[(TOPIC, partition)][0]
        self.cluster.start_node(node)
        return {"node": node.node_id, "partition": partition, "leader_after": new_leader}

    def restart(self, node: KafkaNode) -> dict[str, Any]:
        began = time.monotonic()
        self.cluster.stop_node(node)
        stopped = time.monotonic() - began
        self.cluster.start_node(node)
        return {"node": node.node_id, "stop_seconds": round(stopped, 1)}

    def stalls(self) -> dict[str, float]:
        """Longest gap between successive visible batches, before the drill and in each step's window."""
        rows = self.sql("SELECT DISTINCT toUnixTimestamp64Milli(inserted_at) FROM emotion_scores ORDER BY 1")
        times = [int(r[0]) / 1000 for r in rows]

        def longest_gap(start: float, end: float) -> float:
            inside = [t for t in times if start <= t <= end]
            before = [t for t in times if t < start]
            after = [t for t in times if t > end]
            points = ([before[-1]] if before else []) + inside + ([after[0]] if after else [])
            return round(max((b - a for a, b in itertools.pairwise(points)), default=0.0), 2)

        first = self.steps[0]["started"] if self.steps else time.time()
        result = {"baseline": longest_gap(times[0] if times else first, first)} if times else {}
        for step in self.steps:
            result[step["step"]] = longest_gap(step["started"], step["ended"])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="4", help="Apache Kafka line or version (4, 3.9, 4.4.0, ...)")
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--n", type=int, default=4000, help="tweets to stream")
    parser.add_argument("--rate", type=float, default=40.0, help="tweets per second")
    parser.add_argument("--down", type=float, default=5.0, help="seconds the killed leader stays down")
    parser.add_argument("--kill-at", type=float, default=0.25, help="share of the tweets scored before the kill")
    parser.add_argument("--malformed", type=int, default=len(MALFORMED), help="hostile records sent during the outage")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kafka-failover-"))
    drill = Drill(args, tmp)
    results: dict[str, Any] = {"brokers": args.brokers, "kafka_version": drill.cluster.version}
    try:
        console.print(f"starting Apache Kafka {drill.cluster.version}: {args.brokers} nodes (KRaft) in {tmp}")
        drill.cluster.start()
        drill.start_worker()
        tweets = read_tweets(args.n)
        source = tmp / "tweets.jsonl"
        source.write_text("".join(json.dumps(t) + "\n" for t in tweets))
        ingest_log = (tmp / "ingest.log").open("wb")
        drill.ingest = subprocess.Popen(
            [sys.executable, "-m", "emostream", "ingest", str(source), "--rate", str(args.rate)],
            env=drill.env(),
            stdout=ingest_log,
            stderr=subprocess.STDOUT,
        )
        ingest_log.close()
        stream_started = time.monotonic()
        wait(lambda: drill.scored() >= args.kill_at * args.n, 600, "the first quarter of the tweets scored", 0.5)
        drill.step("leader SIGKILLed", drill.kill_leader)
        for node in drill.cluster.nodes:
            drill.step(f"rolling restart: node {node.node_id}", lambda node=node: drill.restart(node))
        ingest_code = drill.ingest.wait(max(60.0, 3 * args.n / args.rate))
        ingest_out = (tmp / "ingest.log").read_text(errors="replace")
        if ingest_code != 0:
            raise RuntimeError(f"ingest exited with {ingest_code}:\n{ingest_out[-2000:]}")
        with contextlib.suppress(RuntimeError):
            wait(lambda: drill.scored() >= args.n, 300, "every tweet scored", 1.0)
        time.sleep(5)  # anything redelivered after the last step has landed
        streamed = time.monotonic() - stream_started
        results.update(collect(drill, args, tweets))
        results.update(
            stream_seconds=round(streamed, 1),
            stall_seconds=drill.stalls(),
            steps=[{k: v for k, v in s.items() if k not in ("started", "ended")} for s in drill.steps],
            leader_killed=bool(drill.steps) and drill.steps[0]["leader_after"] != drill.steps[0]["node"],
            worker_alive=drill.worker is not None and drill.worker.poll() is None,  # the one process, never restarted
            ingest_idempotent="refused an idempotent producer" not in ingest_out,
        )
    finally:
        for process in (drill.ingest, drill.worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
                if process.poll() is None:
                    process.kill()
        drill.cluster.stop()
    show(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.out}")
    if not results.get("worker_alive", True):
        console.print("[red]the worker exited during the drill[/red]")
    shutil.rmtree(tmp, ignore_errors=True)


def collect(drill: Drill, args: argparse.Namespace, tweets: list[dict[str, str]]) -> dict[str, Any]:
    """What landed where: scores, review items, dead letters, each against what should have."""
    ids = {t["id"] for t in tweets}
    rows = drill.sql("SELECT tweet_id, count() FROM emotion_scores GROUP BY tweet_id")
    written = {str(r[0]): int(r[1]) for r in rows}
    final = int(drill.sql("SELECT count() FROM emotion_scores FINAL")[0][0])
    scored = len(ids & written.keys())
    queued = {str(r[0]) for r in drill.sql("SELECT DISTINCT tweet_id FROM review_queue")}
    bootstrap, partitions = drill.cluster.bootstrap, args.partitions
    on_review = set()
    for value in asyncio.run(read_all(bootstrap, REVIEW, partitions)):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            on_review.add(json.loads(value)["tweet"]["id"])
    letters = [json.loads(v) for v in asyncio.run(read_all(bootstrap, DLQ, partitions))]
    letter_sources = {(d.get("partition"), d.get("offset")) for d in letters}
    dead_rows = drill.sql(f"SELECT DISTINCT partition, offset FROM dead_letters WHERE topic = '{TOPIC}'")
    review_lost = len(queued - on_review)
    dlq_lost = max(0, args.malformed - len(letter_sources))
    return {
        "sent": len(tweets),
        "scored": scored,
        "rows_written": sum(written.values()),
        "rows_final": final,
        "duplicates": sum(count - 1 for count in written.values() if count > 1),
        "unexpected_rows": len(written.keys() - ids),
        "review_items": len(queued),
        "review_on_topic": len(on_review),
        "review_lost": review_lost,
        "malformed_sent": args.malformed,
        "dead_letters_on_topic": len(letter_sources),
        "dead_letters_in_clickhouse": len(dead_rows),
        "dead_letters_lost": dlq_lost,
        "lost": (len(tweets) - scored) + review_lost + dlq_lost,
    }


def show(results: dict[str, Any]) -> None:
    table = Table(title=f"Kafka {results.get('kafka_version')}, {results.get('brokers')} brokers: failover under load")
    table.add_column("step")
    table.add_column("stall (s)", justify="right")
    table.add_column("detail")
    details = {s["step"]: s for s in results.get("steps", [])}
    for name, seconds in results.get("stall_seconds", {}).items():
        detail = details.get(name, {})
        shown = ", ".join(f"{k} {v}" for k, v in detail.items() if k != "step")
        table.add_row(name, f"{seconds:.2f}", shown)
    console.print(table)
    summary = Table(title="Outcome")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    for key in (
        "sent",
        "scored",
        "duplicates",
        "lost",
        "rows_written",
        "review_items",
        "review_on_topic",
        "malformed_sent",
        "dead_letters_on_topic",
        "dead_letters_in_clickhouse",
        "leader_killed",
        "worker_alive",
        "ingest_idempotent",
        "stream_seconds",
    ):
        if key in results:
            summary.add_row(key, str(results[key]))
    console.print(summary)
    print(json.dumps({k: results.get(k) for k in ("sent", "scored", "duplicates", "lost", "stall_seconds")}))


if __name__ == "__main__":
    main()
