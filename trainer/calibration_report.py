"""Fitting a version's calibration at training time, and reporting it: a reliability diagram and a model-card section.

``fine_tune`` fits the temperature on the validation split (held out from training; the test split only
measures) through :func:`calibrate_splits`, which writes ``calibration.json`` (served by every runtime, see
:mod:`emostream.model.calibration`), ``reliability.png``, the figures for ``metrics.json`` and the
model card's section. Scoring goes through the serving runtime's raw logits, so the temperature is fitted
on exactly what serving divides by it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.model.calibration import (
    DEFAULT_BINS,
    Calibration,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    save_calibration,
    softmax,
)
from emostream.model.runtime import EmotionModel

RELIABILITY_PLOT = "reliability.png"
# (probabilities, gold labels) of one named set: what a reliability panel is drawn from
Curve = tuple[np.ndarray, Sequence[int] | np.ndarray]


@dataclass(frozen=True)
class CalibrationPlan:
    """What a version's temperature is fitted on (``splits[fit_on]``, held out from its training) and which
    sets it is measured on (every one of ``splits``), with ``fitted_on`` saying in words what the data was."""

    splits: Mapping[str, tuple[Sequence[str], Sequence[int]]]
    fit_on: str
    fitted_on: str
    part_of_fit: tuple[str, ...] = ()  # other splits whose examples are in ``splits[fit_on]``: in-sample too


@dataclass(frozen=True)
class SetCalibration:
    """How calibrated one evaluation set's scores are before and after the version's temperature."""

    examples: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float

    def as_dict(self) -> dict[str, float | int]:
        """The figures as plain JSON values (``metrics.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class CalibrationResult:
    """A fitted and saved calibration with its measurements per set, and where its diagram went."""

    calibration: Calibration
    fit_on: str
    sets: dict[str, SetCalibration]
    plot: Path | None
    part_of_fit: tuple[str, ...] = ()

    def metrics(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``"calibration"``: the temperature and ECE/NLL per set."""
        return {
            "temperature": self.calibration.temperature,
            "fitted_on": self.calibration.fitted_on,
            "fit_split": self.fit_on,
            "bins": DEFAULT_BINS,
            "sets": {name: figures.as_dict() for name, figures in self.sets.items()},
        }

    def section(self) -> str:
        """The model card's calibration section (:func:`calibration_section`)."""
        return calibration_section(
            self.calibration, self.sets, self.plot.name if self.plot else None, self.fit_on, self.part_of_fit
        )


def measure(logits: np.ndarray, labels: Sequence[int] | np.ndarray, temperature: float) -> SetCalibration:
    """ECE and mean NLL of one set's raw ``logits`` at T = 1 and at ``temperature``."""
    gold = np.asarray(labels)
    return SetCalibration(
        examples=len(gold),
        ece_before=expected_calibration_error(softmax(logits), gold),
        ece_after=expected_calibration_error(softmax(logits, temperature), gold),
        nll_before=negative_log_likelihood(logits, gold),
        nll_after=negative_log_likelihood(logits, gold, temperature),
    )


def _fitted(logits: np.ndarray, labels: Sequence[int] | np.ndarray, fitted_on: str) -> Calibration:
    """The temperature fitted on ``logits`` with its before/after figures on the same data."""
    temperature = fit_temperature(logits, np.asarray(labels))
    figures = measure(logits, labels, temperature)
    return Calibration(
        temperature=temperature,
        fitted_on=fitted_on,
        examples=figures.examples,
        ece_before=figures.ece_before,
        ece_after=figures.ece_after,
        nll_before=figures.nll_before,
        nll_after=figures.nll_after,
    )


def calibrate(
    model_dir: Path, texts: Sequence[str], labels: Sequence[int], fitted_on: str, max_length: int = 128
) -> Calibration:
    """Fit the temperature of the version in ``model_dir`` on held-out ``texts``/``labels`` and save it.

    The raw logits come from the serving runtime (``EmotionModel.predict_logits``), so what is fitted is
    what serving divides; ``fitted_on`` says in words what the data was (it goes into the file and the
    model card). Writes ``calibration.json``; from then on every runtime loading the version applies it.
    """
    logits = EmotionModel(model_dir, max_length=max_length).predict_logits(texts)
    calibration = _fitted(logits, labels, fitted_on)
    save_calibration(model_dir, calibration)
    return calibration


def calibrate_splits(
    model_dir: Path,
    splits: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    fit_on: str,
    fitted_on: str,
    max_length: int = 128,
    plot: Path | None = None,
    title: str = "Reliability diagram",
    part_of_fit: tuple[str, ...] = (),
) -> CalibrationResult:
    """Fit on ``splits[fit_on]``, measure every split before and after, save ``calibration.json``, draw ``plot``.

    ``part_of_fit`` names the splits whose examples are inside ``splits[fit_on]`` (the model card says
    their figures are in-sample).

    One load of the model scores every split's raw logits once; ``fit_on`` must be held out from training
    (``fine_tune`` passes the validation split), and the other splits (test) are measured only.
    """
    if fit_on not in splits:
        raise ValueError(f"no split {fit_on!r} to fit the calibration on (have {sorted(splits)})")
    runtime = EmotionModel(model_dir, max_length=max_length)
    logits = {name: runtime.predict_logits(texts) for name, (texts, _) in splits.items()}
    calibration = _fitted(logits[fit_on], splits[fit_on][1], fitted_on)
    save_calibration(model_dir, calibration)
    temperature = calibration.temperature
    sets = {name: measure(logits[name], labels, temperature) for name, (_, labels) in splits.items()}
    if plot is not None:
        curves: dict[str, Curve] = {}
        for name, (_, labels) in splits.items():
            curves[f"{name}, uncalibrated"] = (softmax(logits[name]), labels)
            curves[f"{name}, calibrated (T = {temperature:.2f})"] = (softmax(logits[name], temperature), labels)
        plot_reliability(curves, plot, title)
    return CalibrationResult(calibration=calibration, fit_on=fit_on, sets=sets, plot=plot, part_of_fit=part_of_fit)


def plot_reliability(curves: Mapping[str, Curve], path: Path, title: str, bins: int = DEFAULT_BINS) -> Path:
    """A reliability diagram PNG: per named set, accuracy per confidence bin against the diagonal.

    Bars on the diagonal mean calibrated; bars below it, over-confident. Each panel's title gives the
    set's ECE; the share of predictions per bin is drawn as a line over the bars, since a bin of three
    tweets says little.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no curves to plot")
    columns = min(len(curves), 2)
    rows = math.ceil(len(curves) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(curves) :]:
        ax.set_visible(False)
    for ax, (name, (probabilities, labels)) in zip(axes.flat, curves.items(), strict=False):
        table = reliability_bins(probabilities, labels, bins)
        total = sum(row.count for row in table)
        width = 1.0 / bins
        lowers = [row.lower for row in table]
        ax.bar(
            lowers,
            [row.accuracy if row.count else 0.0 for row in table],
            width=width,
            align="edge",
            color="#4c72b0",
            edgecolor="white",
            alpha=0.85,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], linestyle="--", color="#dd8452", label="calibrated")
        centers = [row.lower + width / 2 for row in table]
        shares = [row.count / total for row in table]
        ax.plot(centers, shares, color="#333333", marker=".", linewidth=1, label="share of tweets")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top label)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}\nECE {expected_calibration_error(probabilities, labels, bins):.3f}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration_section(
    calibration: Calibration,
    sets: Mapping[str, SetCalibration],
    plot_name: str | None = RELIABILITY_PLOT,
    fit_on: str | None = None,
    part_of_fit: tuple[str, ...] = (),
) -> str:
    """The model card's "Calibration" section: the temperature, what it was fitted on, ECE/NLL before and
    after per evaluation set, the reliability diagram, and what a confidence now means."""
    notes: dict[str | None, str] = {fit_on: " (fitted on)", **{name: " (part of the fit)" for name in part_of_fit}}
    rows = "\n".join(
        f"| {name}{notes.get(name, '')} | {s.examples} | {s.ece_before:.4f} | {s.ece_after:.4f} "
        f"| {s.nll_before:.4f} | {s.nll_after:.4f} |"
        for name, s in sets.items()
    )
    if calibration.temperature > 1.0:
        effect = "T > 1 softens scores that were over-confident"
    elif calibration.temperature < 1.0:
        effect = "T < 1 sharpens scores that were under-confident"
    else:
        effect = "T = 1: no temperature did better, the scores are left as they were"
    diagram = f"\n![Reliability diagram]({plot_name})\n" if plot_name else ""
    held_out = (
        f" The figures of {', '.join((fit_on, *part_of_fit))} are in-sample for the fit; the others are the"
        " honest measure."
        if fit_on and len(sets) > 1 + len(part_of_fit)
        else ""
    )
    return f"""
## Calibration
Scores are temperature-scaled: every runtime serves `softmax(logits / T)` with **T = {calibration.temperature:.4f}**,
fitted on {calibration.fitted_on or "held-out data"} ({calibration.examples} tweets) by minimising the
negative log-likelihood; {effect}.
Dividing by T never changes the top label, so accuracy and F1 above are the same with or without it.
The file is `calibration.json`.

Expected calibration error (ECE, {DEFAULT_BINS} equal-width confidence bins) and mean negative
log-likelihood (NLL), before and after.{held_out}

| set | tweets | ECE before | ECE after | NLL before | NLL after |
|---|---|---|---|---|---|
{rows}
{diagram}
What a confidence means now: of tweets scored at confidence ~0.7, about 70% are right (within the ECE
above, on data like the calibration set; on other domains it may drift).
"""
