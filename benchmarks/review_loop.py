"""The review loop, end to end on real tweets: does it fix what the model gets wrong on a new distribution?

On a fresh embedded stack (`emostream up` in a child process: broker, worker, review service, chDB),
with the registry's current model as champion:

1. before: `wassa2017/dev.tsv` replayed as a live brand-mention stream; accuracy from the worker's own
   rows in ClickHouse (argmax over the four WASSA labels, and over all six);
2. `wassa2017/train.tsv` replayed the same way; the review policy sends tweets to the queue;
3. simulated reviewers (`emostream review simulate`, gold labels from train.tsv, through the page's
   authenticated API) label at most ``--budget`` items in the queue's order;
4. `emostream retrain`, timed, while a live stream keeps flowing to the worker;
5. the running worker swaps to the promoted version: seconds from the promotion to the first row of
   the new version; the live stream's tweets all have a row (none lost);
6. after: dev.tsv replayed again; accuracy from the new version's rows;
7. with ``--curve``: the learning curve. The labels of step 3 in the order the reviewers gave them (the
   queue's order), cut at 100, 250, 500 and 1,000: a challenger trained on each prefix by the round's own
   training (``trainer.retrain.round_data`` / ``round_config`` / ``finetune.train_weights``) with the
   round's recipe (the settings; with ``--alt-epochs``/``--alt-weight`` another one beside it), and the
   round's recipe on as many tweets of train.tsv chosen at
   random (what labelling without the queue would give). Each is scored on dev.tsv with the fp32 runtime
   (argmax over the four labels); a PNG beside the JSON and a table.

Calibration: the expected calibration error (ten bins, top label over all six) of the worker's rows on
dev.tsv, before and after the round: how far the ``confidence`` users read is from how often it is right.

The dev tweets are never labelled (the answers come from train.tsv only), so no retraining sees them.
A replay compresses days of stream into minutes, so the per-hour review budget is lifted here; the
number of labels is bounded by ``--budget`` instead.

Usage: python benchmarks/review_loop.py --out loop.json [--registry models] [--budget 1000]
       [--review-sample 0.05] [--workdir DIR] [--curve [--curve-points 100,250,500,1000]]
       python benchmarks/review_loop.py --noisy --out noisy.json [--budget 1000] [--gold 100]:
       three reviewers who make mistakes, three ways to use them (benchmarks/noisy_reviewers.py)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emostream.model.calibration import expected_calibration_error  # noqa: E402
from emostream.model.registry import ModelRegistry  # noqa: E402
from emostream.schemas import LABELS, Tweet  # noqa: E402
from emostream.stack import stop, wait_for_stack  # noqa: E402
from emostream.stream.discovery import broker_file  # noqa: E402
from emostream.stream.kafka.ingest import produce  # noqa: E402
from emostream.stream.web.endpoint import Endpoint  # noqa: E402

if TYPE_CHECKING:
    from datasets import DatasetDict

    from emostream.trainer.config import RetrainPolicy

WASSA = ROOT.parent / "shared" / "data" / "wassa2017"
WASSA_LABELS = ("anger", "fear", "joy", "sadness")
BRANDS = ("acme", "globex", "initech")
console = Console(stderr=True)


def read_wassa(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def tweets(rows: list[dict[str, str]], prefix: str, seed: int) -> list[tuple[int, Tweet]]:
    rng = random.Random(seed)
    return [
        (i, Tweet(id=f"{prefix}-{row['id']}", text=row["text"], brand=rng.choice(BRANDS), created_at=datetime.now(UTC)))
        for i, row in enumerate(rows, 1)
    ]


def send(bootstrap: str, items: list[tuple[int, Tweet]], rate: float = 0.0) -> None:
    asyncio.run(produce(bootstrap, "tweets", items, rate=rate, total=len(items), progress=False))


def wait_for_rows(endpoint: Endpoint, prefix: str, n: int, version: str, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (count,) = endpoint.sql(
            f"SELECT uniqExact(tweet_id) FROM emotion_scores WHERE startsWith(tweet_id, '{prefix}-') "
            f"AND model_version = '{version}'"
        ).rows[0]
        if int(count) >= n:
            return
        time.sleep(1.0)
    raise RuntimeError(f"only {count} of {n} {prefix} tweets scored by {version} after {timeout:.0f} s")


def accuracy(endpoint: Endpoint, prefix: str, version: str, gold: dict[str, str]) -> tuple[float, float, float]:
    """(argmax over the four WASSA labels, argmax over all six, expected calibration error of the six-label
    confidence) from the worker's rows of ``version``: the scores as users read them in ClickHouse."""
    rows = endpoint.sql(
        f"SELECT tweet_id, {', '.join(LABELS)} FROM emotion_scores FINAL "
        f"WHERE startsWith(tweet_id, '{prefix}-') AND model_version = '{version}'"
    ).rows
    four = six = 0
    probabilities, truths = [], []
    for tweet_id, *values in rows:
        scores = dict(zip(LABELS, map(float, values), strict=True))
        truth = gold[str(tweet_id).removeprefix(f"{prefix}-")]
        four += max(WASSA_LABELS, key=scores.__getitem__) == truth
        six += max(LABELS, key=scores.__getitem__) == truth
        probabilities.append([scores[name] for name in LABELS])
        truths.append(LABELS.index(truth))
    ece = expected_calibration_error(np.array(probabilities), np.array(truths))
    return four / len(rows), six / len(rows), ece


def emostream(*args: str, env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    with log.open("ab") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "emostream", *args], env=env, stdout=subprocess.PIPE, stderr=handle, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"emostream {' '.join(args)} exited with {result.returncode}; see {log}")
    return result


class LiveStream(threading.Thread):
    """Tweets at a steady rate until stopped: the traffic a swap must not lose any of."""

    def __init__(self, bootstrap: str, texts: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.texts, self.rate = bootstrap, texts, rate
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        chunk = max(1, int(self.rate))
        while not self._halt.is_set():
            started = time.monotonic()
            batch = [
                (i, Tweet(id=f"live-{i:06d}", text=self.texts[i % len(self.texts)], brand="acme"))
                for i in range(self.sent, self.sent + chunk)
            ]
            send(self.bootstrap, batch)
            self.sent += len(batch)
            self._halt.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--registry", type=Path, default=Path(os.environ.get("EMOSTREAM_REGISTRY", "models")))
    parser.add_argument("--budget", type=int, default=1000, help="most labels the simulated reviewers give")
    parser.add_argument("--review-sample", type=float, default=None, help="EMOSTREAM_REVIEW_SAMPLE for the run")
    parser.add_argument("--live-rate", type=float, default=20.0, help="tweets/s flowing during retrain and swap")
    parser.add_argument("--wassa", type=Path, default=WASSA)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the run's files here (default: temporary)")
    parser.add_argument("--curve", action="store_true", help="also the learning curve (step 7; ~20 more minutes)")
    parser.add_argument("--curve-points", default="100,250,500,1000", help="label counts of the learning curve")
    parser.add_argument(
        "--alt-epochs", type=float, default=None, help="also a curve for another recipe: its epochs (~10 more minutes)"
    )
    parser.add_argument("--alt-weight", type=int, default=None, help="that recipe: repeats of a reviewed tweet")
    parser.add_argument("--curve-seed", type=int, default=7, help="seed of the random tweets of the curve")
    parser.add_argument(
        "--noisy",
        action="store_true",
        help="instead: three noisy reviewers, single labels vs two opinions vs gold-weighted (noisy_reviewers.py)",
    )
    if "--noisy" in sys.argv[1:]:
        from benchmarks.noisy_reviewers import main as noisy

        noisy([arg for arg in sys.argv[1:] if arg != "--noisy"])
        return
    args = parser.parse_args()
    logging.getLogger("emostream.ingest").setLevel(logging.ERROR)  # the embedded broker's refusal, once a send

    champion = ModelRegistry(args.registry).require_current()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="review-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    registry = work / "models"
    if not (registry / champion.name).exists():  # the champion, copied: promotions stay in the run's registry
        shutil.copytree(champion.path, registry / champion.name)
    ModelRegistry(registry).promote(ModelRegistry(registry).get(champion.name))
    home, log = work / "home", work / "run.log"
    env = {
        **os.environ,
        "EMOSTREAM_REGISTRY": str(registry),
        "EMOSTREAM_HOME": str(home),
        "EMOSTREAM_REVIEW_BUDGET": "0",  # a replay squeezes days into minutes: --budget bounds the labels
        "EMOSTREAM_MODEL_POLL_INTERVAL": "1",
    }
    if args.review_sample is not None:
        env["EMOSTREAM_REVIEW_SAMPLE"] = str(args.review_sample)
    for name in ("EMOSTREAM_KAFKA_BOOTSTRAP", "EMOSTREAM_CLICKHOUSE_DSN"):
        env.pop(name, None)

    dev, train = read_wassa(args.wassa / "dev.tsv"), read_wassa(args.wassa / "train.tsv")
    dev_gold = {row["id"]: row["label"] for row in dev}
    answers = work / "answers.csv"
    with answers.open("w", newline="", encoding="utf-8") as handle:  # train.tsv only: dev is never labelled
        writer = csv.writer(handle)
        writer.writerow(["tweet_id", "label"])
        writer.writerows([f"train-{row['id']}", row["label"]] for row in train)

    results: dict[str, object] = {"champion": champion.name, "dev_tweets": len(dev), "train_tweets": len(train)}
    home.mkdir(parents=True, exist_ok=True)
    with (home / "up.log").open("wb") as up_log:
        stack = subprocess.Popen([sys.executable, "-m", "emostream", "up"], env=env, stdout=up_log, stderr=up_log)
    try:
        endpoint, bootstrap = wait_for_stack(
            stack, home / "clickhouse", broker_file(home), home / "up.log", timeout=300
        )
        console.print(f"[bold]1. before[/bold]: {len(dev)} dev tweets through {champion.name}")
        send(bootstrap, tweets(dev, "dev", seed=1))
        wait_for_rows(endpoint, "dev", len(dev), champion.name)
        results["dev_accuracy_before"], results["dev_accuracy_plain_before"], results["dev_ece_before"] = accuracy(
            endpoint, "dev", champion.name, dev_gold
        )

        console.print(f"[bold]2. stream[/bold]: {len(train)} train tweets")
        send(bootstrap, tweets(train, "train", seed=2))
        wait_for_rows(endpoint, "train", len(train), champion.name)
        queued = endpoint.sql("SELECT uniqExact(tweet_id) FROM review_queue WHERE startsWith(tweet_id, 'train-')")
        results["train_tweets_queued"] = int(queued.rows[0][0])

        console.print(f"[bold]3. review[/bold]: simulated reviewers, at most {args.budget} labels")
        started = time.monotonic()
        emostream("review", "simulate", "--answers", str(answers), "--budget", str(args.budget), env=env, log=log)
        results["review_seconds"] = round(time.monotonic() - started, 1)
        (labels,) = endpoint.sql("SELECT uniqExact(tweet_id) FROM review_labels WHERE NOT retracted").rows
        results["labels_used"] = int(labels[0])

        console.print("[bold]4. retrain[/bold] (a live stream keeps flowing)")
        live = LiveStream(bootstrap, [row["text"] for row in train], args.live_rate)
        live.start()
        started = time.monotonic()
        emostream("retrain", env=env, log=log)
        results["retrain_seconds"] = round(time.monotonic() - started, 1)
        current = ModelRegistry(registry).require_current()
        lineage = current.lineage() if current.name != champion.name else {}
        newest = ModelRegistry(registry).versions()[-1]
        record = newest.lineage()
        results["promoted"] = current.name != champion.name
        results["challenger"] = newest.name
        results["decision"] = record["decision"]["reason"]
        results["emotion_test_accuracy_before"] = record["scores"]["champion"]["base_test"]
        results["emotion_test_accuracy_after"] = record["scores"]["challenger"]["base_test"]
        results["holdout_accuracy_before"] = record["scores"]["champion"]["holdout"]
        results["holdout_accuracy_after"] = record["scores"]["challenger"]["holdout"]
        results["holdout_tweets"] = record["labels"]["held_out"]

        served = current.name
        if lineage:
            console.print(f"[bold]5. swap[/bold]: the running worker moves to {served}")
            promoted_at = (registry / "current").stat().st_mtime
            deadline = time.monotonic() + 120
            first = None
            while first is None and time.monotonic() < deadline:
                row = endpoint.sql(
                    "SELECT toUnixTimestamp64Milli(min(inserted_at)) / 1000, count() FROM emotion_scores "
                    f"WHERE startsWith(tweet_id, 'live-') AND model_version = '{served}'"
                ).rows[0]
                first = float(row[0]) if int(row[1]) else None
                time.sleep(0.5)
            results["swap_seconds"] = round(first - promoted_at, 2) if first is not None else None
            time.sleep(3)  # a few batches on the new version
        live.stop()
        wait_for_rows_any(endpoint, "live", live.sent)
        scored = endpoint.sql("SELECT uniqExact(tweet_id) FROM emotion_scores WHERE startsWith(tweet_id, 'live-')")
        results["live_tweets"] = live.sent
        results["rows_lost"] = live.sent - int(scored.rows[0][0])

        console.print(f"[bold]6. after[/bold]: the dev tweets again, through {served}")
        send(bootstrap, tweets(dev, "dev", seed=1))
        wait_for_rows(endpoint, "dev", len(dev), served)
        results["dev_accuracy_after"], results["dev_accuracy_plain_after"], results["dev_ece_after"] = accuracy(
            endpoint, "dev", served, dev_gold
        )
        order = endpoint.sql(
            "SELECT tweet_id, argMax(label, labelled_at), min(labelled_at) AS first FROM review_labels "
            "GROUP BY tweet_id HAVING NOT argMax(retracted, labelled_at) ORDER BY first, tweet_id"
        ).rows
    finally:
        stop(stack)
    if args.curve:
        texts = {f"train-{row['id']}": row["text"] for row in train}
        reviewed = [(str(tweet_id), texts[str(tweet_id)], str(label)) for tweet_id, label, _ in order]
        answers_by_id = {f"train-{row['id']}": row["label"] for row in train}
        results["curve"] = learning_curve(
            champion.path,
            reviewed,
            answers_by_id,
            texts,
            dev,
            work / "curve",
            **curve_setup(args),
            round_version=registry / str(results["challenger"]),
        )

    table = Table(title=f"Review loop on wassa2017 ({champion.name} -> {results.get('challenger')})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if key == "curve":
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) and value < 2 else str(value))
    Console().print(table)
    if "curve" in results:
        Console().print(curve_table(results["curve"]))
        plot_curve(results["curve"], args.out.with_suffix(".png"))
        console.print(f"wrote {args.out.with_suffix('.png')}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def learning_curve(
    champion: Path,
    reviewed: list[tuple[str, str, str]],
    answers: dict[str, str],
    texts: dict[str, str],
    dev: list[dict[str, str]],
    work: Path,
    *,
    base: DatasetDict,
    policy: RetrainPolicy,
    alt_policy: RetrainPolicy | None,
    counts: list[int],
    seed: int = 7,
    round_version: Path | None = None,
) -> list[dict[str, object]]:
    """Dev accuracy after k labels, for each k of ``counts``: the queue's first k ``reviewed`` (tweet id,
    text, label, in the order they were given) with ``policy`` (and ``alt_policy``, if given), and k tweets of
    ``answers`` chosen at random (``seed``) with ``policy``. Each point is trained the way a round trains
    (from ``champion``, on ``base``'s replay); ``round_version``, the round of step 4, stands for the point
    that is that round (every label, ``policy``)."""
    from emostream.model.registry import ModelVersion
    from emostream.model.runtime import EmotionModel
    from emostream.trainer.finetune import train_weights
    from emostream.trainer.retrain import (
        ReviewedTweet,
        interpolate_toward_champion,
        round_config,
        round_data,
        split_reviewed,
    )

    rng = random.Random(seed)
    shuffled = rng.sample(sorted(answers), len(answers))
    dev_texts = [row["text"] for row in dev]
    dev_gold = np.array([LABELS.index(row["label"]) for row in dev])
    four = np.array([LABELS.index(name) for name in WASSA_LABELS])
    points: list[dict[str, object]] = []
    for k in counts:
        queue = [ReviewedTweet(*row) for row in reviewed[:k]]
        randomly = [ReviewedTweet(tweet_id, texts[tweet_id], answers[tweet_id]) for tweet_id in shuffled[:k]]
        series = [(f"queue, {recipe_name(policy)}", queue, policy)]
        if alt_policy is not None:
            series.append((f"queue, {recipe_name(alt_policy)}", queue, alt_policy))
        series.append((f"random tweets, {recipe_name(policy)}", randomly, policy))
        for name, rows, recipe in series:
            train_rows, _ = split_reviewed(rows, recipe.retrain_holdout)  # what a round trains on
            started = time.monotonic()
            console.print(f"[bold]7. curve[/bold]: {name}, {len(rows)} labels ({len(train_rows)} trained on)")
            if round_version is not None and recipe is policy and rows is queue and len(rows) == len(reviewed):
                out = round_version  # every label, the current recipe: that is the round of step 4
            else:
                out = work / f"point-{len(points)}"
                train_weights(round_data(base, train_rows, recipe), round_config(champion, recipe), out)
                if recipe.retrain_interpolate:  # as a round does, before anything is measured
                    interpolate_toward_champion(
                        out,
                        ModelVersion(champion.name, champion),
                        base["validation"],
                        recipe.retrain_tolerance,
                        recipe.max_length,
                    )
            logits = EmotionModel(out, max_length=recipe.max_length).predict_logits(dev_texts)
            accuracy4 = float((four[logits[:, four].argmax(axis=-1)] == dev_gold).mean())
            points.append(
                {
                    "series": name,
                    "labels": len(rows),
                    "trained_on": len(train_rows),
                    "dev_accuracy": accuracy4,
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            if out != round_version:
                shutil.rmtree(out, ignore_errors=True)
    return points


def recipe_name(policy: RetrainPolicy) -> str:
    """A recipe as the curve's series name it: epochs and how many times each reviewed tweet is repeated."""
    return f"{policy.retrain_epochs:g} epochs, reviewed x{policy.retrain_review_weight}"


def curve_setup(args: argparse.Namespace) -> dict[str, Any]:
    """The curve's base data and recipes, from the same settings the round of step 4 ran with."""
    from emostream.settings import load_settings
    from emostream.trainer.data import ColumnMap, load_sources

    settings = load_settings()
    policy = settings.retrain_policy()
    given = {"retrain_epochs": args.alt_epochs, "retrain_review_weight": args.alt_weight}
    alternative = {name: value for name, value in given.items() if value is not None}
    return {
        "base": load_sources(
            settings.data, ColumnMap(settings.text_column, settings.label_column), policy.seed
        ).dataset,
        "policy": policy,
        "alt_policy": policy.model_copy(update=alternative) if alternative else None,
        "counts": [int(n) for n in args.curve_points.split(",")],
        "seed": args.curve_seed,
    }


def curve_table(points: list[dict[str, object]]) -> Table:
    """The learning curve as a table: a row per label count, a column per series."""
    series = list(dict.fromkeys(str(p["series"]) for p in points))
    table = Table(title="Learning curve: wassa2017 dev accuracy (four labels) after k reviewed labels")
    table.add_column("labels", justify="right")
    for name in series:
        table.add_column(name, justify="right")
    for k in dict.fromkeys(int(p["labels"]) for p in points):  # type: ignore[call-overload]
        row = {str(p["series"]): float(p["dev_accuracy"]) for p in points if p["labels"] == k}  # type: ignore[arg-type]
        table.add_row(str(k), *(f"{row[name]:.4f}" if name in row else "" for name in series))
    return table


def plot_curve(points: list[dict[str, object]], path: Path) -> None:
    """The learning curve as a PNG: dev accuracy against the number of labels, a line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in dict.fromkeys(str(p["series"]) for p in points):
        mine = [p for p in points if p["series"] == name]
        ax.plot([p["labels"] for p in mine], [p["dev_accuracy"] for p in mine], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("reviewed labels (log scale)")
    ax.set_ylabel("accuracy on wassa2017 dev (4 labels)")
    ax.set_title("Review loop: what k labels buy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def wait_for_rows_any(endpoint: Endpoint, prefix: str, n: int, timeout: float = 300.0) -> None:
    """Every tweet of ``prefix`` has a row, whichever version scored it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (count,) = endpoint.sql(
            f"SELECT uniqExact(tweet_id) FROM emotion_scores WHERE startsWith(tweet_id, '{prefix}-')"
        ).rows[0]
        if int(count) >= n:
            return
        time.sleep(1.0)


if __name__ == "__main__":
    main()
