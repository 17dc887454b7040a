"""The stream framework's own ceiling: how fast Faust alone hands records to an agent that does nothing.

``benchmarks/throughput.py`` measures the worker's machinery (Kafka, Faust, parsing, the ClickHouse
insert, the review sends) with the model taken out. This script takes the rest out too: a Faust app
with the worker's consumer settings (raw bytes, the same stream buffer, fetch wait and event loop) and one agent
that takes micro-batches with ``noack_take``, as the worker does, and only acks them, in the agent,
before it takes the next batch. Side by side with ``machinery_tps`` it says how much of the machinery's
time is Faust's own per-record path. (The worker acks in its writer task, while the agent gathers the
next batch, so a draining worker can come out slightly above this figure.)

Each run measures two apps on the same backlog size: stock ``faust.App`` (``faust_only_tps``) and the
worker's ``EagerDeliveryApp`` (``faust_eager_tps``, see ``stream/kafka/eager_delivery.py``), whose consumer hands
a record to its stream without four asyncio tasks per record.

The records are in the topic before the app starts (a backlog, as in ``machinery_tps``); timed from
the first batch to the last record, in the app's process.

Usage: python benchmarks/faust_ceiling.py [--n 10000] [--batch 512] [--runs 3] [--out ceiling.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emostream.settings import load_settings  # noqa: E402
from emostream.stream.kafka.broker import EmbeddedBroker  # noqa: E402
from emostream.stream.kafka.ingest import produce, replay_tweets  # noqa: E402
from emostream.stream.kafka.topics import ensure_topics  # noqa: E402
from emostream.trainer.data import load_emotion  # noqa: E402


def serve(bootstrap: str, topic: str, n: int, batch: int, result: Path, datadir: Path, eager: bool) -> None:
    """The app: take batches like the worker's agent, ack them, write the seconds taken once ``n`` are in."""
    import faust

    from emostream.stream.kafka.eager_delivery import EagerDeliveryApp
    from emostream.stream.worker.app import STREAM_BUFFER_EVENTS, limit_fetch_wait
    from emostream.stream.worker.process import use_event_loop

    settings = load_settings()
    use_event_loop(settings.event_loop)  # the worker's loop (EMOSTREAM_EVENT_LOOP=asyncio for asyncio's own)
    limit_fetch_wait(int(settings.fetch_max_wait * 1000))
    app = (EagerDeliveryApp if eager else faust.App)(
        f"ceiling-{topic}",
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        stream_buffer_maxsize=STREAM_BUFFER_EVENTS,
        web_enabled=False,
        datadir=str(datadir),
    )
    tweets = app.topic(topic, key_type=bytes, value_type=bytes)
    seen: list[float] = []

    @app.agent(tweets)
    async def take_and_ack(stream: faust.StreamT) -> None:
        count = first = 0
        async for events in stream.noack_take(batch, within=settings.max_wait):
            if not seen:
                seen.append(time.perf_counter())
                first = len(events)
            count += len(events)
            for event in events:
                await stream.ack(event)
            if count >= n:
                result.write_text(json.dumps({"seconds": time.perf_counter() - seen[0], "first_batch": first}))
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def measure(bootstrap: str, texts: list[str], batch: int, tmp: Path, delivery: str) -> float:
    topic = f"ceiling-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [topic], load_settings().partitions))
    tweets = ((i, t) for i, t in enumerate(replay_tweets(texts, "test", ["acme"], topic), 1))
    asyncio.run(produce(bootstrap, topic, tweets, progress=False))
    result = tmp / f"{topic}.json"
    command = [sys.executable, __file__, "--serve", bootstrap, topic, str(len(texts)), str(batch), str(result)]
    command.append(delivery)
    subprocess.run(command, check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    measured = json.loads(result.read_text())
    # like machinery_tps: the first batch (the group join, the process's start) is in neither count nor time
    return (len(texts) - measured["first_batch"]) / measured["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="records per run")
    parser.add_argument("--batch", type=int, help="micro-batch size (default: EMOSTREAM_MAX_BATCH)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--serve", nargs=6, help=argparse.SUPPRESS)  # the app's own process
    args = parser.parse_args()
    if args.serve:
        bootstrap, topic, n, batch, result, delivery = args.serve
        datadir = Path(result).with_suffix(".faust")
        serve(bootstrap, topic, int(n), int(batch), Path(result), datadir, eager=delivery == "eager")
        return

    settings = load_settings()
    batch = args.batch or settings.max_batch
    test = load_emotion(settings.data)["test"]["text"]
    texts = [test[i % len(test)] for i in range(args.n)]
    rates: dict[str, list[float]] = {"stock": [], "eager": []}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
        for _ in range(args.runs):  # alternating, so a drift of the machine's speed touches both alike
            for delivery, runs in rates.items():
                runs.append(measure(broker.bootstrap, texts, batch, Path(tmp), delivery))
    results = {
        "n": args.n,
        "batch": batch,
        "runs": rates,
        "faust_only_tps": statistics.median(rates["stock"]),
        "faust_eager_tps": statistics.median(rates["eager"]),
    }
    table = Table(title=f"Faust alone: take and ack, {args.n} records in batches of {batch}")
    table.add_column("run")
    table.add_column("stock faust.App, records/s", justify="right")
    table.add_column("EagerDeliveryApp, records/s", justify="right")
    for i, (stock, eager) in enumerate(zip(rates["stock"], rates["eager"], strict=True), 1):
        table.add_row(str(i), f"{stock:,.0f}", f"{eager:,.0f}")
    table.add_row("median", f"{results['faust_only_tps']:,.0f}", f"{results['faust_eager_tps']:,.0f}")
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
