"""`emostream demo`: the whole loop on the embedded defaults, start to finish, leaving nothing running.

Model (trained if the registry has none) -> `emostream up` in a child process (broker, worker, web
endpoint) -> 2,000 test tweets replayed across brands, plus a few malformed records -> wait until
ClickHouse holds every one -> per-brand emotion shares, review and dead-letter counts -> stop.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.text import Text
from tqdm.auto import tqdm

from emostream.console import err, out, table
from emostream.schemas import LABELS
from emostream.settings import Settings
from emostream.stack import stop, wait_for_stack
from emostream.stream.web.endpoint import Endpoint

REVIEW_URL = re.compile(r"review page: (http://\S+)")
DEMO_TWEETS = 2000
DEMO_BRANDS = ("acme", "globex", "initech", "umbrella")
DEMO_LABELS = 20  # review items the demo's simulated reviewers answer
# measured with benchmarks/review_loop.py on the 2-core machine (README, "The review loop, measured")
RETRAIN_TIME = "about 2 min"
BENCHMARK_TIME = "about 3 min"
MALFORMED = (b"not json at all", b'{"id": "demo-bad-1"}', b'{"id": "demo-bad-2", "text": "   "}')


def run_demo(settings: Settings, train: Callable[[], None], keep_open: bool = False) -> None:
    """``emostream demo``: train if needed, start the embedded stack, stream tweets, review some, retrain, report."""
    from emostream.model.registry import ModelRegistry
    from emostream.stream.discovery import broker_file
    from emostream.stream.kafka.ingest import produce, replay_tweets
    from emostream.trainer.data import load_emotion
    from emostream.trainer.finetune import display_name

    if settings.clickhouse_dsn or settings.kafka_bootstrap:
        err.print("note: the demo runs on the embedded defaults; EMOSTREAM_KAFKA_BOOTSTRAP/CLICKHOUSE_DSN are ignored")
    settings = settings.model_copy(update={"kafka_bootstrap": None, "clickhouse_dsn": None})
    if ModelRegistry(settings.registry).current() is None:
        err.print(
            Text.assemble(
                (
                    f"No model in {settings.registry} yet: fine-tuning {display_name(settings.base_model)} for "
                    f"{settings.epochs:g} epochs first.",
                    "bold",
                ),
                " On a 2-core CPU with native bf16 this takes about 10 minutes, "
                "15 without (the progress bar shows the live estimate); on a GPU, about one.",
            )
        )
        train()
    test_split = load_emotion(settings.data[0])["test"]  # the primary source's test, as the model's `test`
    texts, gold = test_split["text"][:DEMO_TWEETS], test_split["label"][:DEMO_TWEETS]

    env = {**os.environ, "EMOSTREAM_REGISTRY": str(settings.registry), "EMOSTREAM_HOME": str(settings.home)}
    env.pop("EMOSTREAM_KAFKA_BOOTSTRAP", None)
    env.pop("EMOSTREAM_CLICKHOUSE_DSN", None)
    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "demo-up.log"
    err.print(f"starting the embedded stack (`emostream up`, log in {log_path})")
    with open(log_path, "wb") as log:
        stack = subprocess.Popen([sys.executable, "-m", "emostream", "up"], env=env, stdout=log, stderr=log)
    try:
        dsn_dir = settings.clickhouse().directory
        assert dsn_dir is not None
        endpoint, bootstrap = wait_for_stack(stack, dsn_dir, broker_file(settings.home), log_path)
        run_id = time.strftime("demo%Y%m%d%H%M%S")
        tweets = ((i, t) for i, t in enumerate(replay_tweets(texts, "test", list(DEMO_BRANDS), run_id), 1))
        err.print(
            f"replaying {len(texts):,} test tweets across {', '.join(DEMO_BRANDS)}, and {len(MALFORMED)} "
            "malformed records"
        )
        report = asyncio.run(produce(bootstrap, settings.topic_tweets, tweets, total=len(texts)))
        asyncio.run(_send_raw(bootstrap, settings.topic_tweets, MALFORMED))
        where = f"tweet_id LIKE '{run_id}-%'"
        started = time.monotonic()
        with tqdm(total=report.sent, unit="tweet", desc="scored in ClickHouse") as bar:
            while bar.n < report.sent:
                if stack.poll() is not None:
                    raise RuntimeError(f"`emostream up` exited with {stack.returncode}; see {log_path}")
                count = endpoint.sql(f"SELECT uniqExact(tweet_id) FROM emotion_scores WHERE {where}").rows[0][0]
                bar.update(int(count) - bar.n)
                time.sleep(0.5)
        seconds = time.monotonic() - started
        _print_results(endpoint, where, settings, report.sent, seconds, bootstrap)
        _simulate_reviewers(endpoint, settings.home, [f"{run_id}-test-{i:05d}" for i in range(len(gold))], gold)
        _print_review(endpoint, log_path, keep_open)
        _print_next_steps()
        if keep_open:
            try:
                stack.wait()
            except KeyboardInterrupt:
                err.print("stopping the stack")
    finally:
        stop(stack)


async def _send_raw(bootstrap: str, topic: str, values: tuple[bytes, ...]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _topic_size(bootstrap: str, topic: str, quiet_ms: int = 1000) -> int:
    """Records on a topic, counted by reading it to the end (the embedded broker starts empty each run).

    Reading, not summing end offsets: tansu's ListOffsets undercounts partitions that received
    several records in one produce batch (seen here: 2 for 3 dead letters).
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        count = 0
        while batch := await consumer.getmany(timeout_ms=quiet_ms):
            count += sum(len(records) for records in batch.values())
        return count
    finally:
        await consumer.stop()


def _print_results(
    endpoint: Endpoint, where: str, settings: Settings, sent: int, seconds: float, bootstrap: str
) -> None:
    shares = ", ".join(f"round(100 * countIf(label = '{name}') / count(), 1) AS {name}" for name in LABELS)
    result = endpoint.sql(
        f"SELECT brand, count() AS tweets, {shares}, round(avg(confidence), 3) AS mean_confidence "
        f"FROM emotion_scores FINAL WHERE {where} GROUP BY brand ORDER BY brand",
    )
    out.print(
        table(
            f"Emotion shares per brand, % of {sent:,} tweets scored in {seconds:.1f} s",
            result.columns,
            [[str(value) for value in row] for row in result.rows],
            raw=True,
        )
    )
    review = asyncio.run(_topic_size(bootstrap, settings.topic_review))
    dead, deadline = 0, time.monotonic() + 30
    while dead < len(MALFORMED) and time.monotonic() < deadline:  # they may trail the last valid tweet
        dead = asyncio.run(_topic_size(bootstrap, settings.topic_dlq))
    out.print(
        f"{sent:,} tweets in, {sum(int(r[1]) for r in result.rows):,} rows in emotion_scores; "
        f"{review:,} sent to review ({settings.topic_review}: confidence < {settings.review_threshold}, and "
        f"{settings.review_sample:.0%} of the rest); "
        f"{dead:,} malformed records in {settings.topic_dlq}"
    )
    out.print(
        f'query the scores yourself: emostream sql "SELECT label, count() FROM emotion_scores FINAL '
        f'WHERE {where} GROUP BY label"'
    )


def _simulate_reviewers(endpoint: Endpoint, home: Path, tweet_ids: list[str], gold: list[int]) -> None:
    """The loop in short: simulated reviewers answer a few review items with the test split's gold labels,
    through the review API a person's page uses, so the labels land where people's do."""
    import csv

    from emostream.stream.review.simulate import Answers, ReviewClient, simulate

    answers = home / "demo-answers.csv"
    with answers.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet_id", "label"])
        writer.writerows([tweet_id, LABELS[label]] for tweet_id, label in zip(tweet_ids, gold, strict=True))
    report = simulate(ReviewClient(endpoint.url, endpoint.token), Answers.read(answers), DEMO_LABELS)
    out.print(
        f"simulated reviewers labelled {report.labelled} review items with the test split's gold labels "
        f"(with `emostream up` running, `emostream review simulate --answers {answers} --budget {DEMO_LABELS}` "
        "does the same)"
    )


def _print_review(endpoint: Endpoint, log_path: Path, keep_open: bool) -> None:
    """How many items wait for a person, and where the page that shows them is."""
    from emostream.stream.review.queue import PENDING_COUNT

    pending = int(endpoint.sql(PENDING_COUNT).rows[0][0])
    match = REVIEW_URL.search(log_path.read_text(errors="replace"))
    url = match.group(1) if match else "(see " + str(log_path) + ")"
    if keep_open:
        out.print(f"{pending:,} tweets wait in the review queue: label them at {url}  (trends: /trends; Ctrl-C stops)")
    else:
        out.print(
            f"{pending:,} tweets wait in the review queue. The stack stops now; to label them, run "
            "`emostream up` and open the review page URL it prints (or `emostream demo --keep-open`)"
        )


def _print_next_steps() -> None:
    """The rest of the loop, which takes minutes rather than seconds: what to run, and how long it takes."""
    out.print(
        table(
            "The rest of the review loop (times on a 2-core CPU)",
            ["run", "what it does", "takes"],
            [
                ["emostream up", "broker, worker and the review page (open the URL it prints)", "stays up"],
                [
                    "emostream retrain",
                    "a challenger from the reviewers' labels, promoted if it beats the current model",
                    RETRAIN_TIME,
                ],
                [
                    "python benchmarks/review_loop.py --out loop.json",
                    "the whole loop on real tweets (wassa2017): 1,000 labels, retrain, hot swap, before/after",
                    BENCHMARK_TIME,
                ],
            ],
            raw=True,
        )
    )
