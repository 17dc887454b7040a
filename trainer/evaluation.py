"""Scoring a saved model on a split or file, and the chapter's error analysis by per-example loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset

from emostream.model.runtime import ScoringRuntime
from emostream.schemas import LABELS
from emostream.trainer.classification_metrics import classification_metrics


def evaluate(model: ScoringRuntime, dataset: Dataset) -> dict[str, Any]:
    """Metrics of the model's top label against the data set's gold labels (``classification_metrics``)."""
    probabilities = model.predict_proba(dataset["text"])
    return classification_metrics(dataset["label"], probabilities.argmax(axis=-1))


def losses_frame(model: ScoringRuntime, dataset: Dataset) -> pd.DataFrame:
    """Every example with its gold label, predicted label and cross-entropy loss, highest loss first.

    The top rows show label noise and the model's blind spots; the bottom rows show what it is
    (perhaps too) sure of, e.g. shortcuts on single words.
    """
    logits = torch.from_numpy(model.predict_logits(dataset["text"]))
    gold = torch.tensor(dataset["label"])
    loss = torch.nn.functional.cross_entropy(logits, gold, reduction="none").numpy()
    predicted = logits.argmax(dim=-1).numpy()
    frame = pd.DataFrame(
        {
            "text": dataset["text"],
            "label": [LABELS[i] for i in dataset["label"]],
            "predicted_label": [LABELS[i] for i in predicted],
            "loss": np.round(loss, 4),
        }
    )
    return frame.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)
