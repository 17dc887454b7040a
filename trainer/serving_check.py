"""Which fast runtimes are accurate enough to serve this model version? Measured, never assumed.

int8 quantization and bf16 make MiniLM 2-5x faster on a CPU but can cost accuracy, more for some
fine-tuned weights than for others. ``train`` runs every candidate on the validation split (never the
test split, which stays for the final report) and writes the verdicts to the version's
``serving.json``; the runtime's ``auto`` mode serves only an accepted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from emostream.model.runtime import SERVING_CHECK_FILE, build_runtime, cpu_has_native_bf16

DEFAULT_TOLERANCE = 0.005  # at most half a point of accuracy


def serving_check(
    model_dir: Path,
    validation: Dataset,
    fp32_predictions: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Accept each fast CPU runtime within ``tolerance`` of fp32's validation accuracy; writes ``serving.json``."""
    texts, gold = validation["text"], np.array(validation["label"])
    fp32_accuracy = float((fp32_predictions == gold).mean())
    candidates = ["onnx-int8"] + (["torch-bf16"] if cpu_has_native_bf16() else [])
    runtimes: dict[str, dict[str, Any]] = {}
    for name in candidates:
        predicted = build_runtime(name, model_dir, device="cpu", batch_size=batch_size).predict_proba(texts)
        labels = predicted.argmax(axis=-1)
        accuracy = float((labels == gold).mean())
        runtimes[name] = {
            "accuracy": accuracy,
            "label_agreement": float((labels == fp32_predictions).mean()),
            "accepted": fp32_accuracy - accuracy <= tolerance,
        }
    result = {
        "split": "validation",
        "n": len(gold),
        "fp32_accuracy": fp32_accuracy,
        "tolerance": tolerance,
        "runtimes": runtimes,
    }
    (model_dir / SERVING_CHECK_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result
