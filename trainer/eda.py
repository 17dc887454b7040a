"""Exploratory analysis: how the labels are distributed and how long the tweets are."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from emostream.schemas import LABELS


def eda_frame(data: DatasetDict) -> pd.DataFrame:
    """One row per tweet: split, label name and words per tweet."""
    frames = []
    for split, dataset in data.items():
        frame = dataset.to_pandas()
        frame["split"] = split
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["label_name"] = pd.Categorical([LABELS[i] for i in frame["label"]], categories=list(LABELS))
    frame["words_per_tweet"] = frame["text"].str.split().str.len()
    return frame


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per label: count in each split, share of the training split, and words-per-tweet statistics."""
    counts = frame.pivot_table(index="label_name", columns="split", values="text", aggfunc="count", observed=False)
    counts = counts.reindex(columns=[s for s in ("train", "validation", "test") if s in counts.columns])
    counts = counts.fillna(0).astype(int)
    train = frame[frame["split"] == "train"] if "train" in set(frame["split"]) else frame
    share = train["label_name"].value_counts(normalize=True).reindex(list(LABELS)).fillna(0)
    words = frame.groupby("label_name", observed=False)["words_per_tweet"].agg(["median", "mean", "max"])
    table = counts.assign(train_share=share.round(3))
    words = words.round(1).astype({"max": int})
    table = table.join(words.rename(columns=lambda c: f"words_{c}"))
    table.index.name = "label"
    return table


def plot_eda(frame: pd.DataFrame, reports: Path) -> list[Path]:
    """The chapter's two plots: class frequencies (bar chart) and words per tweet (box plot by label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports.mkdir(parents=True, exist_ok=True)
    train = frame[frame["split"] == "train"] if "train" in set(frame["split"]) else frame

    fig, ax = plt.subplots(figsize=(6.5, 4))
    train["label_name"].value_counts(ascending=True).plot.barh(ax=ax, color="#4c72b0")
    ax.set_title("Frequency of classes (train split)")
    ax.set_xlabel("tweets")
    fig.tight_layout()
    distribution = reports / "eda_class_distribution.png"
    fig.savefig(distribution, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    train.boxplot("words_per_tweet", by="label_name", grid=False, showfliers=False, ax=ax, color="black")
    fig.suptitle("")
    ax.set_title("Words per tweet (train split)")
    ax.set_xlabel("")
    fig.tight_layout()
    lengths = reports / "eda_words_per_tweet.png"
    fig.savefig(lengths, dpi=120)
    plt.close(fig)
    return [distribution, lengths]
