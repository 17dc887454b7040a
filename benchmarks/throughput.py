"""Throughput and latency of the scoring path, all measured in one run on this machine.

1. model only: the served runtime (``emostream``'s default, e.g. int8 on a CPU where its accuracy check
   passed) scoring the tweets in the worker's micro-batches (``model_only_tps``: the median of its runs);
2. per-tweet baseline: a transformers ``pipeline("text-classification")`` called once per tweet, the
   way its documentation shows;
3. the whole pipeline: tweets produced to a real (embedded) broker, a real ``emostream worker`` process,
   rows counted in ClickHouse (chDB) -- from the first send to the last row visible. ``--repeats`` times
   (3), each with a fresh worker, measured between two model-only runs with no worker running: this
   machine's speed drifts by up to 20% within minutes (922 then 1,139 tweets/s two minutes apart, 8% in
   the 25 s between two brackets), so each pipeline run is compared with the model measured on either
   side of it, and ``ratio`` is the median of those ratios (each run's in ``ratio_runs``);
3b. the stream machinery alone (``machinery_tps``): the worker's model replaced by the ``benchmark-fixed``
   runtime (fixed probabilities, no model), the n tweets already waiting in the topic (a backlog, which
   is when a worker's ceiling matters), one fresh worker process carrying them to ClickHouse: tweets per
   second from its first batch's rows visible to its last (the first batch, which carries the group
   join and the process's start, is left out of both the count and the time). That is the ceiling Kafka,
   Faust, parsing, the insert and the review sends put on one worker however fast its model is: what a
   GPU worker is held to;
3c. ``machinery_live_tps``: the same worker fed live by this benchmark's producer as in 3, which on a
   two-core machine takes CPU from the worker and the broker that a deployment's producers would not;
4. end-to-end latency (created_at at send -> scored_at) at half the model's capacity;
5. test-split accuracy of the fp32 model and of the served runtime.

Usage: python benchmarks/throughput.py [--n 2000] [--out results.json] [--registry models]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.model_speed import rate  # noqa: E402
from emostream.model.registry import ModelRegistry  # noqa: E402
from emostream.model.runtime import FIXED_RUNTIME, EmotionModel, ScoringRuntime, load_runtime  # noqa: E402
from emostream.settings import load_settings  # noqa: E402
from emostream.stream.discovery import endpoint_file, read_state  # noqa: E402
from emostream.stream.kafka.broker import EmbeddedBroker  # noqa: E402
from emostream.stream.kafka.ingest import produce  # noqa: E402
from emostream.stream.kafka.topics import ensure_topics  # noqa: E402
from emostream.stream.web.endpoint import Endpoint  # noqa: E402
from emostream.trainer.data import load_emotion  # noqa: E402

console = Console(stderr=True)


def shown(value: object) -> str:
    """A table cell: ratios and accuracies to 4 places, rates to 1, anything else as it is."""
    if isinstance(value, float):
        return f"{value:,.4f}" if value < 2 else f"{value:,.1f}"
    return str(value)


def timed(fn, *args) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def model_only(model: ScoringRuntime, texts: list[str], batch: int) -> float:
    """Tweets per second of the model alone on the worker's micro-batches (``model_speed.rate``)."""
    return rate(model.predict_proba, texts, batch)


def per_tweet_pipeline(model_dir: Path, texts: list[str]) -> float:
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(model_dir), top_k=None, device=-1)
    classifier(texts[0])
    seconds, _ = timed(lambda: [classifier(text) for text in texts])
    return len(texts) / seconds


def accuracy(model: EmotionModel, texts: list[str], labels: list[int]) -> float:
    return float((model.predict_proba(texts).argmax(axis=-1) == np.array(labels)).mean())


def topics_of(run: str) -> list[str]:
    return [f"bench-{run}", f"bench-{run}.review", f"bench-{run}.dlq"]


class Worker:
    def __init__(self, bootstrap: str, registry: Path, tmp: Path, runtime: str | None = None, run: str = "") -> None:
        run = run or uuid.uuid4().hex[:8]
        self.topic, review, dlq = topics_of(run)
        self.dir = tmp / "ch"
        self.env = {
            **os.environ,
            "EMOSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "EMOSTREAM_REGISTRY": str(registry),
            "EMOSTREAM_HOME": str(tmp / "home"),
            "EMOSTREAM_CLICKHOUSE_DSN": f"chdb://{self.dir}",
            "EMOSTREAM_TOPIC_TWEETS": self.topic,
            "EMOSTREAM_TOPIC_REVIEW": review,
            "EMOSTREAM_TOPIC_DLQ": dlq,
            "EMOSTREAM_GROUP_ID": f"bench-{run}",
            "EMOSTREAM_SESSION_TIMEOUT": "2",
            "EMOSTREAM_HEARTBEAT_INTERVAL": "0.5",
        }
        if runtime:
            self.env["EMOSTREAM_RUNTIME"] = runtime
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = open(tmp / "worker.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "emostream", "worker"], env=self.env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 120
        while not (state := read_state(endpoint_file(self.dir))) or state["pid"] != self.process.pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {tmp / 'worker.log'}")
            time.sleep(0.1)
        endpoint = Endpoint.find(self.dir)
        assert endpoint is not None
        self.endpoint = endpoint

    def sql(self, query: str) -> list:
        return self.endpoint.sql(query).rows

    def count(self, prefix: str) -> int:
        return int(self.sql(f"SELECT count() FROM emotion_scores WHERE startsWith(tweet_id, '{prefix}')")[0][0])

    def wait_for(self, prefix: str, n: int, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while (seen := self.count(prefix)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {seen}/{n} rows after {timeout} s")
            time.sleep(1.0)  # poll rarely (the endpoint shares the cores); the timing comes from the rows
        ((last_visible,),) = self.sql(
            f"SELECT toUnixTimestamp64Milli(max(inserted_at)) / 1000 FROM emotion_scores "
            f"WHERE startsWith(tweet_id, '{prefix}')"
        )
        return float(last_visible)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def send(bootstrap: str, topic: str, texts: list[str], prefix: str, rate: float = 0.0) -> None:
    from emostream.stream.kafka.ingest import replay_tweets

    tweets = ((i, t) for i, t in enumerate(replay_tweets(texts, "test", ["acme", "globex"], prefix), 1))
    asyncio.run(produce(bootstrap, topic, tweets, rate=rate, progress=False))


def warm_up(worker: Worker, bootstrap: str, texts: list[str]) -> None:
    """One batch through the worker, so that its group is joined and its model warm before anything is timed."""
    send(bootstrap, worker.topic, texts, "warm")
    worker.wait_for("warm", len(texts))


def through(worker: Worker, bootstrap: str, texts: list[str], batch: int) -> float:
    """Tweets per second from the first send to the last row visible, after a warm-up batch."""
    warm_up(worker, bootstrap, texts[:batch])
    send(bootstrap, worker.topic, texts, "thru")
    last_visible = worker.wait_for("thru", len(texts))
    # from the first tweet's created_at (stamped as it is sent) to the last row's inserted_at
    # (stamped by ClickHouse), both on this machine's clock: ingest to rows visible
    (first_sent,) = worker.sql(
        "SELECT toUnixTimestamp64Milli(min(created_at)) / 1000 FROM emotion_scores WHERE startsWith(tweet_id, 'thru')"
    )[0]
    return len(texts) / (last_visible - float(first_sent))


def drain(bootstrap: str, registry: Path, tmp: Path, texts: list[str], partitions: int) -> float:
    """Tweets per second one fresh ``benchmark-fixed`` worker carries from a backlog to rows visible.

    The tweets are in the topic before the worker starts. Timed from the moment its first batch's rows
    are visible to the last row's (both ``inserted_at``, stamped by ClickHouse, one per insert), and
    counted without that first batch: its time holds the process's start and the group join, which are
    not the machinery's rate.
    """
    run = uuid.uuid4().hex[:8]
    asyncio.run(ensure_topics(bootstrap, topics_of(run), partitions))
    send(bootstrap, topics_of(run)[0], texts, "drain")
    worker = Worker(bootstrap, registry, tmp, runtime=FIXED_RUNTIME, run=run)
    try:
        worker.wait_for("drain", len(texts))
        ((first, first_rows, last),) = worker.sql(
            "SELECT toUnixTimestamp64Milli(min(inserted_at)) / 1000, countIf(inserted_at = "
            "(SELECT min(inserted_at) FROM emotion_scores WHERE startsWith(tweet_id, 'drain'))), "
            "toUnixTimestamp64Milli(max(inserted_at)) / 1000 FROM emotion_scores WHERE startsWith(tweet_id, 'drain')"
        )
    finally:
        worker.stop()
    return (len(texts) - int(first_rows)) / (float(last) - float(first))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="tweets per measurement")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--registry", type=Path, help="model registry (default: EMOSTREAM_REGISTRY or models)")
    parser.add_argument("--per-tweet-n", type=int, default=400, help="tweets for the slow per-tweet baseline")
    parser.add_argument("--workdir", type=Path, help="keep the broker and worker logs here (default: a temporary dir)")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs, each between two model-only runs")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="duration of the latency run")
    args = parser.parse_args()

    settings = load_settings(registry=args.registry)
    version = ModelRegistry(settings.registry).require_current()
    test = load_emotion(settings.data)["test"]
    texts = [test["text"][i % len(test)] for i in range(args.n)]
    served = load_runtime(settings, version.path)
    batch, partitions = settings.max_batch, settings.partitions
    fp32 = EmotionModel(version.path, device=settings.device, max_length=settings.max_length)
    console.print(f"model {version.name}: served as {served.runtime_name}, micro-batches of {batch}")

    results: dict[str, object] = {
        "model_version": version.name,
        "runtime": served.runtime_name,
        "n": args.n,
        "batch": batch,
        "torch_threads": torch.get_num_threads(),
    }
    results["test_accuracy_fp32"] = accuracy(fp32, test["text"], test["label"])
    results["test_accuracy_served"] = accuracy(served, test["text"], test["label"])
    results["fp32_model_only_tps"] = model_only(fp32, texts, batch)
    results["per_tweet_pipeline_tps"] = per_tweet_pipeline(version.path, texts[: args.per_tweet_n])
    del fp32

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = contextlib.nullcontext(str(args.workdir)) if args.workdir else tempfile.TemporaryDirectory()
    with workdir as tmp, EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
        # The model alone, a fresh pipeline worker, the model alone again, `repeats` times: no worker runs
        # while the model is measured, each pipeline run is compared with the mean of the two model-only
        # runs on either side of it, and the ratio is the median of those ratios.
        model_runs = [model_only(served, texts, batch)]
        pipeline_runs: list[float] = []
        ratios: list[float] = []
        for repeat in range(args.repeats):
            worker = Worker(broker.bootstrap, settings.registry, Path(tmp) / f"pipeline-{repeat}")
            try:
                pipeline_runs.append(through(worker, broker.bootstrap, texts, batch))
            finally:
                worker.stop()
            model_runs.append(model_only(served, texts, batch))
            ratios.append(pipeline_runs[-1] / ((model_runs[-2] + model_runs[-1]) / 2))
        results["model_only_runs_tps"] = model_runs
        results["pipeline_runs_tps"] = pipeline_runs
        results["ratio_runs"] = ratios
        model_tps = results["model_only_tps"] = statistics.median(model_runs)
        results["pipeline_tps"] = statistics.median(pipeline_runs)
        results["ratio"] = statistics.median(ratios)

        worker = Worker(broker.bootstrap, settings.registry, Path(tmp) / "latency")
        try:
            warm_up(worker, broker.bootstrap, texts[:batch])
            rate = 0.5 * model_tps
            n_latency = int(rate * args.latency_seconds)
            late = [test["text"][i % len(test)] for i in range(n_latency)]
            send(broker.bootstrap, worker.topic, late, "late", rate=rate)
            worker.wait_for("late", n_latency)
            latencies = np.array(
                [
                    row[0]
                    for row in worker.sql(
                        "SELECT dateDiff('millisecond', created_at, inserted_at) FROM emotion_scores "
                        "WHERE startsWith(tweet_id, 'late')"
                    )
                ],
                dtype=float,
            )
            results["latency_rate_tps"] = rate
            results["latency_p50_ms"] = float(np.percentile(latencies, 50))
            results["latency_p99_ms"] = float(np.percentile(latencies, 99))
        finally:
            worker.stop()
        # The model taken out: one worker process's ceiling, what a GPU worker is held to. After the first
        # worker has stopped, so no two workers ever share the cores.
        results["machinery_tps"] = drain(broker.bootstrap, settings.registry, Path(tmp) / "drain", texts, partitions)
        machinery = Worker(broker.bootstrap, settings.registry, Path(tmp) / "machinery", runtime=FIXED_RUNTIME)
        try:
            results["machinery_live_tps"] = through(machinery, broker.bootstrap, texts, batch)
        finally:
            machinery.stop()

    results["speedup_vs_per_tweet"] = float(results["model_only_tps"]) / float(results["per_tweet_pipeline_tps"])  # type: ignore[arg-type]
    results["machinery_over_model_only"] = float(results["machinery_tps"]) / float(results["model_only_tps"])  # type: ignore[arg-type]
    results["machinery_live_over_model_only"] = float(results["machinery_live_tps"]) / float(results["model_only_tps"])  # type: ignore[arg-type]
    results["per_tweet_speedup_of_pipeline"] = float(results["pipeline_tps"]) / float(results["per_tweet_pipeline_tps"])  # type: ignore[arg-type]

    table = Table(title=f"emostream throughput ({version.name}, {served.runtime_name}, {args.n} tweets)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in results.items():
        values = value if isinstance(value, list) else [value]
        table.add_row(key, ", ".join(shown(v) for v in values))
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
