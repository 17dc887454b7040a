"""The chapter's bar chart of predicted class probabilities, one panel per text."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from emostream.schemas import LABELS


def plot_probabilities(records: Sequence[dict[str, object]], path: Path, max_panels: int = 12) -> Path:
    """A PNG of each record's six probabilities (top label highlighted), the first ``max_panels`` only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(records)[:max_panels]
    fig, axes = plt.subplots(len(shown), 1, figsize=(7, 2.6 * len(shown)), squeeze=False)
    for ax, record in zip(axes[:, 0], shown, strict=True):
        values = [100 * float(cast(float, record[name])) for name in LABELS]  # score_records' probabilities
        colors = ["#dd8452" if name == record["label"] else "#4c72b0" for name in LABELS]
        ax.bar(LABELS, values, color=colors)
        ax.set_ylim(0, 100)
        ax.set_ylabel("probability (%)")
        ax.set_title(textwrap.shorten(f'"{record["text"]}"', 90), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
