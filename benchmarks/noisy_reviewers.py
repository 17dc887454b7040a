"""The review loop with reviewers who make mistakes: what overlap, adjudication by agreement and gold
questions buy, measured on real tweets. Run by ``benchmarks/review_loop.py --noisy`` (or alone).

Three simulated named reviewers, wrong 10%, 20% and 35% of the time (a share of their answers replaced by
another label, `emostream review simulate --team`), give ``--budget`` labels in all (1,000), on a fresh
embedded stack per strategy, with the registry's current model as champion and the same stream:

- **single**: one opinion per tweet (EMOSTREAM_REVIEW_OPINIONS=1), every label trained on;
- **two opinions**: two per tweet; retraining takes the tweets both reviewers agreed on (a disputed tweet
  waits for an adjudicator, and no adjudicator is simulated: the agreement adjudicates), so half as many
  tweets are labelled, each twice;
- **gold-weighted**: one opinion per tweet, with ``--gold`` tweets of known label (from train.tsv, kept out
  of the stream) mixed into the queue at EMOSTREAM_REVIEW_GOLD_RATE; each reviewer's labels weigh as their
  gold accuracy in retraining. The gold answers come out of the same budget.

For each: how many tweets the round trained on and how many of their labels are right (against
train.tsv's gold), then one `emostream retrain`, and the challenger's accuracy on wassa2017's dev split
(fp32, argmax over the four WASSA labels; dev is never labelled), promoted or not.

Usage: python benchmarks/noisy_reviewers.py --out noisy.json [--registry models] [--budget 1000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.review_loop import (  # noqa: E402
    BRANDS,
    WASSA,
    WASSA_LABELS,
    emostream,
    read_wassa,
    send,
    tweets,
    wait_for_rows,
)
from emostream.model.registry import ModelRegistry  # noqa: E402
from emostream.schemas import LABELS  # noqa: E402
from emostream.stack import stop, wait_for_stack  # noqa: E402
from emostream.stream.discovery import broker_file  # noqa: E402

TEAM = "ana:0.10,bo:0.20,cy:0.35"
STRATEGIES = {
    "single": {"EMOSTREAM_REVIEW_OPINIONS": "1", "EMOSTREAM_REVIEW_GOLD_RATE": "0"},
    "two opinions": {"EMOSTREAM_REVIEW_OPINIONS": "2", "EMOSTREAM_REVIEW_GOLD_RATE": "0"},
    "gold-weighted": {"EMOSTREAM_REVIEW_OPINIONS": "1"},  # the gold rate: --gold-rate
}
console = Console(stderr=True)


def dev_accuracy(version: Path, dev: list[dict[str, str]]) -> float:
    """The version's fp32 accuracy on dev.tsv, argmax over the four WASSA labels."""
    from emostream.model.runtime import EmotionModel

    four = np.array([LABELS.index(name) for name in WASSA_LABELS])
    gold = np.array([LABELS.index(row["label"]) for row in dev])
    logits = EmotionModel(version).predict_logits([row["text"] for row in dev])
    return float((four[logits[:, four].argmax(axis=-1)] == gold).mean())


def run_strategy(
    name: str, settings: dict[str, str], args: argparse.Namespace, work: Path, champion: Any, data: dict[str, Any]
) -> dict[str, Any]:
    """One strategy on a stack of its own: stream, the team's labels, a round, the challenger on dev."""
    registry = work / "models"
    shutil.copytree(champion.path, registry / champion.name)
    ModelRegistry(registry).promote(ModelRegistry(registry).get(champion.name))
    home, log = work / "home", work / "run.log"
    home.mkdir(parents=True)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("EMOSTREAM_KAFKA_BOOTSTRAP", "EMOSTREAM_CLICKHOUSE_DSN")},
        "EMOSTREAM_REGISTRY": str(registry),
        "EMOSTREAM_HOME": str(home),
        "EMOSTREAM_REVIEW_BUDGET": "0",
        "EMOSTREAM_REVIEW_GOLD_RATE": str(args.gold_rate),
        **settings,
    }
    result: dict[str, Any] = {
        "strategy": name,
        **{k.removeprefix("EMOSTREAM_").lower(): v for k, v in settings.items()},
    }
    with (home / "up.log").open("wb") as up_log:
        stack = subprocess.Popen([sys.executable, "-m", "emostream", "up"], env=env, stdout=up_log, stderr=up_log)
    try:
        endpoint, bootstrap = wait_for_stack(stack, home / "clickhouse", broker_file(home), home / "up.log", 300)
        if name == "gold-weighted":
            emostream("review", "gold", str(data["gold_file"]), env=env, log=log)
        console.print(f"[bold]{name}[/bold]: {len(data['stream'])} train tweets streamed")
        send(bootstrap, tweets(data["stream"], "train", seed=2))
        wait_for_rows(endpoint, "train", len(data["stream"]), champion.name)
        started = time.monotonic()
        emostream(
            "review", "simulate", "--answers", str(data["answers"]), "--budget", str(args.budget),
            "--team", TEAM, "--seed", str(args.seed), env=env, log=log,
        )  # fmt: skip
        result["review_seconds"] = round(time.monotonic() - started, 1)
        result["labels_given"] = int(endpoint.sql("SELECT count() FROM review_answers").rows[0][0])
        snapshot = work / "labels.csv"  # what the round trains on: the decided labels
        emostream("labels", "--with-ids", "--out", str(snapshot), env=env, log=log)
        with snapshot.open(encoding="utf-8", newline="") as handle:
            trained = list(csv.DictReader(handle))
        truth = data["truth"]
        result["tweets_labelled"] = len(trained)
        result["labels_right"] = round(sum(truth.get(r["tweet_id"]) == r["label"] for r in trained) / len(trained), 4)
        if name == "gold-weighted":
            rows = endpoint.sql("SELECT reviewer, answered, round(accuracy, 3) FROM review_gold_accuracy").rows
            result["gold_accuracy"] = {str(r): {"answered": int(n), "accuracy": float(a)} for r, n, a in rows}
        started = time.monotonic()
        emostream("retrain", env=env, log=log)
        result["retrain_seconds"] = round(time.monotonic() - started, 1)
    finally:
        stop(stack)
    newest = ModelRegistry(registry).versions()[-1]
    record = newest.lineage()
    result["challenger"] = newest.name
    result["promoted"] = ModelRegistry(registry).require_current().name == newest.name
    result["decisions"] = record["labels"].get("decisions", {})
    result["mean_weight"] = record["labels"].get("mean_weight")
    result["dev_accuracy"] = round(dev_accuracy(newest.path, data["dev"]), 4)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--registry", type=Path, default=Path(os.environ.get("EMOSTREAM_REGISTRY", "models")))
    parser.add_argument("--budget", type=int, default=1000, help="labels the three reviewers give in all")
    parser.add_argument(
        "--gold", type=int, default=100, help="gold questions (train.tsv tweets kept out of the stream)"
    )
    parser.add_argument("--gold-rate", type=float, default=0.1, help="EMOSTREAM_REVIEW_GOLD_RATE of gold-weighted")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reviewers' mistakes")
    parser.add_argument("--wassa", type=Path, default=WASSA)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    champion = ModelRegistry(args.registry).require_current()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="noisy-reviewers-"))
    dev, train = read_wassa(args.wassa / "dev.tsv"), read_wassa(args.wassa / "train.tsv")
    rows = list(train)
    random.Random(11).shuffle(rows)
    gold, stream = rows[: args.gold], rows[args.gold :]
    work.mkdir(parents=True, exist_ok=True)
    answers, gold_file = work / "answers.csv", work / "gold.csv"
    with answers.open("w", newline="", encoding="utf-8") as handle:  # the right answers: streamed and gold tweets
        writer = csv.writer(handle)
        writer.writerow(["tweet_id", "label"])
        writer.writerows([f"train-{row['id']}", row["label"]] for row in stream)
        writer.writerows([f"gold-{row['id']}", row["label"]] for row in gold)
    with gold_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label", "brand"])
        brands = random.Random(12)
        writer.writerows([f"gold-{row['id']}", row["text"], row["label"], brands.choice(BRANDS)] for row in gold)
    data = {
        "dev": dev,
        "stream": stream,
        "answers": answers,
        "gold_file": gold_file,
        "truth": {f"train-{row['id']}": row["label"] for row in stream},
    }
    results: dict[str, Any] = {
        "champion": champion.name,
        "team": TEAM,
        "budget": args.budget,
        "gold_questions": args.gold,
        "gold_rate": args.gold_rate,
        "dev_accuracy_before": round(dev_accuracy(champion.path, dev), 4),
        "strategies": [],
    }
    for name, settings in STRATEGIES.items():
        results["strategies"].append(run_strategy(name, settings, args, work / name.replace(" ", "-"), champion, data))
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # what is done so far survives a crash
    table = Table(
        title=f"Three noisy reviewers ({TEAM}), {args.budget} labels in all; champion {champion.name} "
        f"at {results['dev_accuracy_before']:.1%} on dev"
    )
    for column in ("strategy", "tweets trained on", "labels right", "decisions", "dev accuracy after", "promoted"):
        table.add_column(column, justify="left" if column in ("strategy", "decisions") else "right")
    for r in results["strategies"]:
        decided = ", ".join(f"{k} {v}" for k, v in r["decisions"].items())
        table.add_row(
            r["strategy"], str(r["tweets_labelled"]), f"{r['labels_right']:.1%}", decided,
            f"{r['dev_accuracy']:.1%}", "yes" if r["promoted"] else "no",
        )  # fmt: skip
    Console().print(table)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
