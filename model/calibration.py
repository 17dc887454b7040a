"""Calibrated confidence: one temperature per model version, fitted on held-out data, applied when scoring.

A fine-tuned classifier's softmax is usually over-confident: of the tweets it scores at 0.95, far fewer
than 95% are right. Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks")
divides the logits by one number ``T`` before the softmax: ``T > 1`` softens the scores, ``T < 1``
sharpens them. ``T`` is fitted on a held-out split by minimising the negative log-likelihood; since
dividing by a positive number keeps the order of the logits, the top label never changes, only how sure
the score says it is.

Each registry version may carry a :data:`CALIBRATION_FILE` beside its weights; every scoring runtime
(:class:`emostream.model.runtime.ScoringRuntime`) reads it at load time and a version without one is
served with ``T = 1``, exactly as before. This module is numpy and pydantic only, so the serving side pays
nothing for it; the report (plots, the model card's section) is
``emostream.trainer.calibration_report``.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CALIBRATION_FILE = "calibration.json"
# The temperatures a fit may choose and a file may hold: anything outside is no calibration of ours (a
# hand edit or a damaged file), and refusing it keeps logits / T far from float overflow.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
MAX_FILE_BYTES = 64 * 1024  # a calibration file is a few hundred bytes; a huge one is not read into memory
DEFAULT_BINS = 10


class Calibration(BaseModel):
    """A version's temperature and what it was fitted on: what ``calibration.json`` holds.

    ``temperature`` is the only field serving uses; the rest tells a reader of the model card or of the
    registry where it came from and how much it helped (expected calibration error and mean negative
    log-likelihood on the fitting data, before and after). Strict, so a file of ours is refused when
    anything in it could not have come from a fit (a string or ``true`` for a number, NaN, a temperature
    outside the fit's range); keys this version does not know are ignored, so a file written by a newer
    emostream still serves.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    temperature: float = Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False)
    fitted_on: str = ""
    examples: int = Field(0, ge=0)
    ece_before: float | None = Field(None, ge=0, allow_inf_nan=False)
    ece_after: float | None = Field(None, ge=0, allow_inf_nan=False)
    nll_before: float | None = Field(None, ge=0, allow_inf_nan=False)
    nll_after: float | None = Field(None, ge=0, allow_inf_nan=False)


def check_temperature(temperature: object) -> float:
    """``temperature`` as a float if it is a finite number in [MIN_TEMPERATURE, MAX_TEMPERATURE]; else ValueError.

    Zero, negative, NaN or infinite temperatures would turn every score into NaN or a one-hot vector.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a number, not {type(temperature).__name__}")
    value = float(temperature)
    if not math.isfinite(value) or not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be finite and within [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], not {value}")
    return value


def load_calibration(model_dir: str | Path) -> Calibration | None:
    """The version's calibration, or None when it has no :data:`CALIBRATION_FILE` (served with T = 1).

    A file that is there but cannot be trusted (not JSON, not an object, a temperature that is zero,
    negative, NaN, infinite or no number at all) raises ``ValueError`` naming the file: a version with a
    broken calibration must not be served with silently wrong confidences.
    """
    path = Path(model_dir) / CALIBRATION_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the calibration file: {error}") from error
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: not a calibration file (over {MAX_FILE_BYTES} bytes)")
    try:
        return Calibration.model_validate_json(raw)
    except ValidationError as error:
        raise ValueError(f"{path}: not a valid calibration file ({error})") from error


def save_calibration(model_dir: str | Path, calibration: Calibration) -> Path:
    """Write :data:`CALIBRATION_FILE` into ``model_dir`` atomically (a temporary file, then ``os.replace``).

    A reader (a worker loading the version) sees the old file or the new one, never half of one.
    """
    directory = Path(model_dir)
    path = directory / CALIBRATION_FILE
    text = calibration.model_dump_json(indent=2) + "\n"
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CALIBRATION_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis, stable against overflow.

    The dtype of float logits is kept, and ``temperature=1.0`` divides by nothing, so an uncalibrated
    version's probabilities are bit for bit what they were before calibration existed.
    """
    scores = np.asarray(logits)
    if temperature != 1.0:
        scores = scores / check_temperature(temperature)
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def _labels_for(scores: np.ndarray, labels: npt.ArrayLike) -> np.ndarray:
    """Checks that ``scores`` is (n, classes) with n > 0 and ``labels`` n class ids; returns them as int64."""
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        raise ValueError(f"expected scores of shape (n > 0, classes > 1), not {scores.shape}")
    ids = np.asarray(labels)
    if ids.shape != (scores.shape[0],):
        raise ValueError(f"expected {scores.shape[0]} labels, not an array of shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, not {ids.dtype}")
    if ids.min() < 0 or ids.max() >= scores.shape[1]:
        raise ValueError(f"labels must be class ids in [0, {scores.shape[1]})")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return ids.astype(np.int64)


def negative_log_likelihood(logits: npt.ArrayLike, labels: npt.ArrayLike, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the gold labels under ``softmax(logits / temperature)``.

    What temperature scaling minimises, and the second number (after ECE) the model card reports.
    """
    scores = np.asarray(logits, dtype=np.float64)
    ids = _labels_for(scores, labels)
    return _nll(scores, ids, check_temperature(temperature))


def _nll(scores: np.ndarray, ids: np.ndarray, temperature: float) -> float:
    """Mean NLL for checked float64 ``scores`` (log-sum-exp, so no logit is too large)."""
    z = scores / temperature
    top = z.max(axis=-1)
    log_normaliser = top + np.log(np.exp(z - top[:, None]).sum(axis=-1))
    return float((log_normaliser - z[np.arange(len(ids)), ids]).mean())


def fit_temperature(logits: npt.ArrayLike, labels: npt.ArrayLike, tolerance: float = 1e-6) -> float:
    """The temperature in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises the mean NLL of ``softmax(logits / T)``.

    The NLL is convex in ``1 / T``, hence unimodal in ``log T``: SciPy's bounded scalar minimiser (Brent's
    method) over ``log T`` finds it without gradients, deterministically. Where no temperature does better
    than 1 (the NLL is flat, e.g. all logits equal) it returns 1.0. SciPy loads here, at training time
    only: serving never fits.
    """
    from scipy.optimize import minimize_scalar

    scores = np.asarray(logits, dtype=np.float64)
    ids = _labels_for(scores, labels)
    result = minimize_scalar(
        lambda log_t: _nll(scores, ids, math.exp(log_t)),
        bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": tolerance},
    )
    best = min(max(math.exp(float(result.x)), MIN_TEMPERATURE), MAX_TEMPERATURE)
    return 1.0 if _nll(scores, ids, 1.0) <= _nll(scores, ids, best) else best


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width confidence bin: its edges (lower, upper], how many predictions fall in it, their
    mean top-label confidence and the share of them that are right (both NaN when the bin is empty)."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def reliability_bins(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = DEFAULT_BINS
) -> list[ReliabilityBin]:
    """Predictions grouped by top-label confidence into ``bins`` equal-width bins over [0, 1].

    The rows of a reliability diagram or table: a calibrated model's accuracy in each bin is close to the
    bin's mean confidence. Bin ``i`` holds confidences in ``(i / bins, (i + 1) / bins]``.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, not {bins!r}")
    scores = np.asarray(probabilities, dtype=np.float64)
    ids = _labels_for(scores, labels)
    confidence = scores.max(axis=-1)
    correct = scores.argmax(axis=-1) == ids
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, bins - 1)
    result = []
    for i in range(bins):
        inside = index == i
        count = int(inside.sum())
        mean_confidence = float(confidence[inside].mean()) if count else math.nan
        accuracy = float(correct[inside].mean()) if count else math.nan
        result.append(ReliabilityBin(float(edges[i]), float(edges[i + 1]), count, mean_confidence, accuracy))
    return result


def expected_calibration_error(probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = DEFAULT_BINS) -> float:
    """The expected calibration error (Guo et al., 2017): the gap between accuracy and mean top-label
    confidence in each of ``bins`` equal-width bins, weighted by the share of predictions in the bin.

    0 means "of the tweets scored at confidence ~p, a share p is right", at every p.
    """
    rows = reliability_bins(probabilities, labels, bins)
    total = sum(row.count for row in rows)
    return float(sum(row.count / total * abs(row.accuracy - row.confidence) for row in rows if row.count))
