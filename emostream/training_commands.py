"""Training commands: eda, baseline, train, models, evaluate, errors, predict (chapter 2 of the book)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from emostream.cli_common import (
    Data,
    Device,
    InferenceBatch,
    LabelColumn,
    MaxLength,
    ModelOption,
    Registry,
    Reports,
    Seed,
    TextColumn,
    UsageError,
    app,
    setting,
    settings_from,
)
from emostream.console import err, frame_table, literal, metrics_table, out, per_class_table, table
from emostream.settings import Settings, load_settings

if TYPE_CHECKING:
    from datasets import DatasetDict

    from emostream.model.runtime import ScoringRuntime
    from emostream.trainer.data import TrainingData


def _load_sources(settings: Settings) -> TrainingData:
    """Every ``--data`` source, loaded as a training run reads them (train and validation of all, each test)."""
    from emostream.trainer.data import ColumnMap, load_sources

    parts: list[str | Text] = ["loading data from "]
    for i, source in enumerate(settings.data):
        parts += [", "] if i else []
        parts.append(literal(source, style="bold"))
    err.print(Text.assemble(*parts))
    return load_sources(settings.data, ColumnMap(settings.text_column, settings.label_column), settings.seed)


def _load_data(settings: Settings) -> DatasetDict:
    """The data the non-training commands read: with several sources, train and validation are all of
    them (as ``train`` sees them) and ``test`` is the first source's; one source loads as it always did."""
    return _load_sources(settings).dataset


def _model_dir(settings: Settings, model: str | None) -> Path:
    from emostream.model.registry import ModelRegistry

    registry = ModelRegistry(settings.registry)
    if model is None:
        return registry.require_current().path
    if Path(model).is_dir():
        return Path(model)
    return registry.get(model).path


def _load_model(settings: Settings, model: str | None) -> ScoringRuntime:
    from emostream.model.config import RuntimeConfig
    from emostream.model.runtime import load_runtime

    return load_runtime(settings.piece(RuntimeConfig), _model_dir(settings, model))


@app.command()
def eda(
    data: Data = None, text_column: TextColumn = None, label_column: LabelColumn = None, reports: Reports = None
) -> None:
    """Class distribution and words per tweet: two PNG plots and the same numbers as a table."""
    from emostream.trainer.eda import eda_frame, plot_eda, summary_table

    settings = settings_from(locals())
    frame = eda_frame(_load_data(settings))
    out.print(frame_table("Tweets per label and words per tweet", summary_table(frame)))
    for path in plot_eda(frame, settings.reports):
        out.print(f"wrote {path}")


@app.command()
def baseline(
    data: Data = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    encoder: Annotated[str | None, typer.Option(help="encoder for the features; default: --base-model")] = None,
    pooling: Annotated[str, typer.Option(help="cls (the book's choice) or mean (MiniLM's own pooling)")] = "mean",
    reports: Reports = None,
    device: Device = None,
    inference_batch_size: InferenceBatch = None,
    seed: Seed = None,
) -> None:
    """Frozen-encoder features + LogisticRegression against DummyClassifier(most_frequent), on validation."""
    settings = settings_from(locals())
    import torch

    from emostream.trainer.baseline import run_baseline

    if pooling not in ("cls", "mean"):
        raise UsageError(f"--pooling must be cls or mean, not {pooling!r}")
    result = run_baseline(
        _load_data(settings),
        encoder or settings.base_model,
        settings.reports,
        pooling=pooling,  # type: ignore[arg-type]  # a str, checked to be cls or mean above
        batch_size=settings.inference_chunk(cuda=torch.cuda.is_available()),
        max_length=settings.max_length,
        device=settings.device,
        seed=settings.seed,
    )
    metrics = {"LogisticRegression": result.logistic_regression, "DummyClassifier": result.dummy}
    out.print(metrics_table("Feature-extraction baseline (validation split)", metrics))
    out.print(per_class_table("LogisticRegression per class", result.logistic_regression))
    settings.reports.mkdir(parents=True, exist_ok=True)
    (settings.reports / "baseline_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for path in result.plots:
        out.print(f"wrote {path}")
    if len(result.plots) == 1:
        err.print("no UMAP plot: install the viz extra (pip install 'emostream[viz]')")


@app.command()
def train(
    data: Data = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    registry: Registry = None,
    base_model: Annotated[str | None, setting("base_model")] = None,
    epochs: Annotated[float | None, setting("epochs")] = None,
    batch_size: Annotated[int | None, setting("batch_size")] = None,
    learning_rate: Annotated[float | None, setting("learning_rate")] = None,
    warmup_ratio: Annotated[float | None, setting("warmup_ratio")] = None,
    weight_decay: Annotated[float | None, setting("weight_decay")] = None,
    max_length: MaxLength = None,
    seed: Seed = None,
    promote: Annotated[bool, typer.Option("--promote", help="make the new version current even if not better")] = False,
) -> None:
    """Fine-tune end to end with the HF Trainer; write a new registry version. Prints its directory last."""
    settings = settings_from(locals())
    from emostream.model.registry import ModelRegistry
    from emostream.trainer.finetune import fine_tune, named_results

    loaded = _load_sources(settings)
    dataset = loaded.dataset
    config = settings.train_config()
    err.print(f"fine-tuning {settings.base_model} for {settings.epochs:g} epochs on {len(dataset['train']):,} tweets")
    result = fine_tune(
        dataset,
        config,
        ModelRegistry(settings.registry),
        data_source=os.pathsep.join(loaded.locations),
        data_files=loaded.files,
        sources=loaded.sources,
        promote=promote,
    )
    title = f"{result.version.name} ({result.seconds / 60:.1f} min)"
    out.print(metrics_table(title, dict(named_results(result.metrics))))
    primary = f" ({loaded.primary.name})" if len(loaded.sources) > 1 else ""
    out.print(per_class_table(f"Test split{primary} per class", result.metrics["test"]))
    out.print(serving_table(result.serving))
    state = "promoted to current" if result.promoted else "not promoted (the current version is as good or better)"
    err.print(f"{result.version.name}: {state}")
    print(result.version.path.resolve())


@app.command()
def models(registry: Registry = None) -> None:
    """List the registry's versions with their metrics; * marks the one serving uses."""
    from emostream.model.registry import ModelRegistry

    settings = load_settings(registry=registry)
    reg = ModelRegistry(settings.registry)
    versions = reg.versions()
    if not versions:
        raise UsageError(f"{settings.registry}: no model versions yet; train one with `emostream train`")
    current = reg.current()
    rows = []
    for v in versions:
        m, meta = v.metrics(), _read_json(v.path / "training.json")
        lineage = v.lineage()
        val, test = m.get("validation", {}), m.get("test", {})
        if lineage:
            decision = lineage["decision"]
            reviewed = f"{lineage['labels']['trained_on']:,} reviewed: "
            verdict = reviewed + ("promoted" if decision["promoted"] else "rejected") + f" ({decision['reason']})"
        else:
            verdict = ""
        rows.append(
            [
                ("* " if current and current.name == v.name else "  ") + v.name,
                meta.get("created_at", ""),
                lineage.get("parent") or Path(str(meta.get("base_model", ""))).name,
                val.get("accuracy"),
                val.get("f1_weighted"),
                test.get("accuracy"),
                test.get("f1_weighted"),
                verdict,
            ]
        )
    out.print(
        table(
            f"Model registry {settings.registry}",
            ["version", "created", "parent", "val acc", "val F1", "test acc", "test F1", "retrain"],
            rows,
        )
    )


@app.command()
def evaluate(
    model: ModelOption = None,
    split: Annotated[str, typer.Option(help="validation, test, or a data file (.txt/.csv/.json/.jsonl)")] = "test",
    data: Data = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    registry: Registry = None,
    device: Device = None,
    inference_batch_size: InferenceBatch = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
) -> None:
    """Accuracy, weighted/macro F1, per-class scores and the confusion matrix of a saved model."""
    settings = settings_from(locals())
    from emostream.trainer.data import ColumnMap, read_rows, to_dataset
    from emostream.trainer.evaluation import evaluate as evaluate_model

    if split in ("validation", "test", "train"):
        dataset = _load_data(settings)[split]
    elif Path(split).is_file():
        dataset = to_dataset(read_rows(Path(split), ColumnMap(settings.text_column, settings.label_column)))
    else:
        raise UsageError(f"--split: {split!r} is neither validation, test nor an existing file")
    runtime = _load_model(settings, model)
    metrics = evaluate_model(runtime, dataset)
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    out.print(metrics_table(f"{runtime.model_dir} on {split}", {split: metrics}))
    out.print(per_class_table("Per class", metrics))
    from emostream.schemas import LABELS

    out.print(
        table(
            "Confusion matrix (rows: gold, columns: predicted)",
            ["", *LABELS],
            ([name, *row] for name, row in zip(LABELS, metrics["confusion_matrix"], strict=True)),
        )
    )


@app.command()
def errors(
    model: ModelOption = None,
    top: Annotated[int, typer.Option(help="how many of the highest- and lowest-loss examples to print")] = 10,
    data: Data = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    registry: Registry = None,
    reports: Reports = None,
    device: Device = None,
) -> None:
    """Error analysis: the validation examples with the highest and lowest loss, printed and as CSV."""
    from emostream.trainer.evaluation import losses_frame

    settings = settings_from(locals())
    runtime = _load_model(settings, model)
    frame = losses_frame(runtime, _load_data(settings)["validation"])
    settings.reports.mkdir(parents=True, exist_ok=True)
    csv_path = settings.reports / f"errors_{runtime.version}_validation.csv"
    frame.to_csv(csv_path, index=False)
    out.print(frame_table(f"Highest loss (of {len(frame):,})", frame.head(top), index=False))
    out.print(frame_table("Lowest loss", frame.tail(top).iloc[::-1], index=False))
    out.print(f"wrote {csv_path}")


@app.command()
def predict(
    texts: Annotated[
        list[str] | None, typer.Argument(help="texts to score; read from stdin (one a line) if none")
    ] = None,
    model: ModelOption = None,
    registry: Registry = None,
    device: Device = None,
    plot: Annotated[Path | None, typer.Option(help="also draw the class probabilities as a bar chart PNG")] = None,
) -> None:
    """All six emotion probabilities per text, as JSON lines."""
    from emostream.model.runtime import score_records

    settings = load_settings(registry=registry, device=device)
    if not texts:
        if sys.stdin.isatty():
            raise UsageError("give texts as arguments or pipe them in, one per line")
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    runtime = _load_model(settings, model)
    records = score_records(runtime, texts)
    for record in records:
        print(json.dumps(record, ensure_ascii=False))
    if plot is not None:
        from emostream.trainer.plots import plot_probabilities

        err.print(f"wrote {plot_probabilities(records, plot)}")


def serving_table(serving: dict[str, Any]) -> Any:
    """A version's ``serving.json`` as a table: each fast runtime's validation accuracy and verdict beside fp32's."""
    rows = [["torch-fp32", serving["fp32_accuracy"], "", "reference"]]
    for name, verdict in serving["runtimes"].items():
        rows.append(
            [
                name,
                verdict["accuracy"],
                verdict["label_agreement"],
                "accepted" if verdict["accepted"] else f"rejected (> {serving['tolerance']:.3f} lost)",
            ]
        )
    return table(
        "Serving check (validation accuracy per runtime)", ["runtime", "accuracy", "agreement", "verdict"], rows
    )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
