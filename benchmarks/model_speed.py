"""How fast the served runtime scores on this device, by micro-batch and chunk size; the tokenizer's share.

A worker scores micro-batches of up to ``EMOSTREAM_MAX_BATCH`` tweets; the runtime cuts each into chunks
of ``EMOSTREAM_INFERENCE_BATCH_SIZE`` similar-length tweets (default 16 on a CPU, 256 on a GPU), and
tokenizes each chunk on the CPU before the model sees it. On a GPU the model's part shrinks by tens of
times and the tokenizer's does not, so this script reports both: tweets per second through
``predict_proba`` (what ``model_only_tps`` in ``throughput.py`` measures) and through the tokenizer
alone, for each size. Set ``EMOSTREAM_MAX_BATCH`` and ``EMOSTREAM_INFERENCE_BATCH_SIZE`` from its table;
compare the best figure with ``machinery_tps`` to know how many worker processes one GPU needs.

Needs only the model and its runtime (no broker, no ClickHouse), so it runs on a bare GPU box.

Usage: python benchmarks/model_speed.py [--registry models] [--n 20000] [--batches 512,2048]
       [--chunks 256,1024] [--texts texts.json] [--out model_speed.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emostream.model.registry import ModelRegistry  # noqa: E402
from emostream.model.runtime import ScoringRuntime, load_runtime, resolve_device  # noqa: E402
from emostream.settings import load_settings  # noqa: E402


def rate(work: object, texts: Sequence[str], batch: int) -> float:
    """Tweets per second of ``work`` over ``texts`` in micro-batches of ``batch``, after one warm-up batch."""
    work(texts[:batch])  # type: ignore[operator]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        work(texts[i : i + batch])  # type: ignore[operator]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - start)


def tokenize_only(runtime: ScoringRuntime) -> object:
    """The runtime's own tokenization of a micro-batch (same chunks, same padding), without the model."""

    def tokenize(texts: Sequence[str]) -> None:
        for _ in runtime.encode(texts):
            pass

    return tokenize


def load_texts(path: Path | None, n: int) -> list[str]:
    if path is not None:
        texts = json.loads(path.read_text())
    else:
        from emostream.trainer.data import load_emotion

        texts = list(load_emotion(load_settings().data)["test"]["text"])
    return [texts[i % len(texts)] for i in range(n)]


def sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",") if size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", type=Path, help="model registry (default: EMOSTREAM_REGISTRY or models)")
    parser.add_argument("--n", type=int, default=20000, help="tweets per measurement")
    parser.add_argument("--batches", type=sizes, default=None, help="micro-batch sizes (default: EMOSTREAM_MAX_BATCH)")
    parser.add_argument("--chunks", type=sizes, default=None, help="chunk sizes (default: the runtime's)")
    parser.add_argument("--texts", type=Path, help="a JSON list of texts (default: the emotion test split)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    settings = load_settings(registry=args.registry)
    version = ModelRegistry(settings.registry).require_current()
    texts = load_texts(args.texts, args.n)
    device = resolve_device(settings.device)
    batches = args.batches or [settings.max_batch]
    default_chunk = settings.inference_chunk(cuda=device.type == "cuda")
    cpu = f"cpu ({torch.get_num_threads()} threads)"
    results: dict[str, object] = {
        "model_version": version.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "n": args.n,
        "rows": [],
    }
    table = Table(title=f"{version.name} on {results['device']}, {args.n} tweets")
    for column in ("runtime", "micro-batch", "chunk", "model tweets/s", "tokenizer alone tweets/s", "tokenizer share"):
        table.add_column(column, justify="right")
    for chunk in args.chunks or [default_chunk]:
        runtime = load_runtime(settings.model_copy(update={"inference_batch_size": chunk}), version.path)
        for batch in batches:
            model_tps = rate(runtime.predict_proba, texts, batch)
            tokenizer_tps = rate(tokenize_only(runtime), texts, batch)
            row = {
                "runtime": runtime.runtime_name,
                "batch": batch,
                "chunk": chunk,
                "model_only_tps": model_tps,
                "tokenizer_only_tps": tokenizer_tps,
                "tokenizer_share": model_tps / tokenizer_tps,
            }
            results["rows"].append(row)  # type: ignore[attr-defined]
            table.add_row(
                runtime.runtime_name,
                str(batch),
                str(chunk),
                f"{model_tps:,.0f}",
                f"{tokenizer_tps:,.0f}",
                f"{row['tokenizer_share']:.0%}",
            )
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
