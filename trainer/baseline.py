"""The chapter's baseline: frozen-encoder features + LogisticRegression, against a DummyClassifier."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emostream.schemas import LABELS
from emostream.trainer.classification_metrics import classification_metrics, plot_confusion_matrix
from emostream.trainer.features import Pooling, extract_hidden_states


@dataclass
class BaselineResult:
    """Validation metrics of the logistic regression and of the most-frequent-label dummy, and the plots written."""

    logistic_regression: dict[str, Any]
    dummy: dict[str, Any]
    plots: list[Path]


def run_baseline(
    data: DatasetDict,
    encoder: str,
    reports: Path,
    *,
    pooling: Pooling = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    seed: int = 42,
    umap: bool = True,
) -> BaselineResult:
    """Fit on the train split's features, score on validation (the test split stays untouched)."""
    features = partial(
        extract_hidden_states, encoder, pooling=pooling, batch_size=batch_size, max_length=max_length, device=device
    )
    x_train = features(data["train"]["text"], desc="train features")
    x_valid = features(data["validation"]["text"], desc="validation features")
    y_train, y_valid = np.array(data["train"]["label"]), np.array(data["validation"]["label"])

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
    classifier.fit(x_train, y_train)
    dummy = DummyClassifier(strategy="most_frequent").fit(x_train, y_train)
    predicted = classifier.predict(x_valid)

    plots = [
        plot_confusion_matrix(
            y_valid,
            predicted,
            reports / "baseline_confusion_matrix.png",
            "Normalized confusion matrix: LogisticRegression on frozen features",
        )
    ]
    if umap:
        plot = plot_umap(x_train, y_train, reports / "baseline_umap.png", seed)
        if plot is not None:
            plots.append(plot)
    return BaselineResult(
        logistic_regression=classification_metrics(y_valid, predicted),
        dummy=classification_metrics(y_valid, dummy.predict(x_valid)),
        plots=plots,
    )


def plot_umap(features: np.ndarray, labels: np.ndarray, path: Path, seed: int) -> Path | None:
    """The chapter's per-label hexbin densities of a 2-D UMAP projection (needs the ``viz`` extra)."""
    try:
        from umap import UMAP
    except ImportError:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.preprocessing import MinMaxScaler

    embedded = UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(
        MinMaxScaler().fit_transform(features)
    )
    fig, axes = plt.subplots(2, 3, figsize=(9, 6))
    cmaps = ["Greys", "Blues", "Oranges", "Reds", "Purples", "Greens"]
    for i, (ax, name, cmap) in enumerate(zip(axes.flatten(), LABELS, cmaps, strict=True)):
        points = embedded[labels == i]
        ax.hexbin(points[:, 0], points[:, 1], cmap=cmap, gridsize=20, linewidths=(0,))
        ax.set_title(name)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
