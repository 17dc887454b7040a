"""Temperature scaling: the fit, ECE, the calibration file (hostile ones too), every runtime applying it,
and the report ``train`` writes (calibration.json, reliability.png, metrics.json, the model card)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from emostream.model.calibration import (
    CALIBRATION_FILE,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    Calibration,
    expected_calibration_error,
    fit_temperature,
    load_calibration,
    negative_log_likelihood,
    reliability_bins,
    save_calibration,
    softmax,
)
from emostream.model.runtime import FIXED_RUNTIME, build_runtime
from emostream.schemas import ID2LABEL, LABEL2ID, LABELS

TEXTS = [
    "i feel great today",
    "so sad and lonely",
    "this makes me furious",
    "i am scared of the dark",
    "what a surprise that was!",
    "i love you all",
    "",
    "meh",
    "a much longer tweet about the weather, the bus, the rain and how it all felt on a monday morning",
    "x" * 200,
]
TEMPERATURE = 2.5


def draw(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One label per row, drawn from that row's distribution."""
    cumulative = probabilities.cumsum(axis=1)
    u = rng.random((len(probabilities), 1))
    return np.minimum((u > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def synthetic(temperature: float, n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): the true temperature is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, len(LABELS)))
    return logits, draw(rng, softmax(logits, temperature))


# -- the fit and the measures -------------------------------------------------------------------------


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.0, 4.0])
def test_fit_recovers_a_known_temperature(true_temperature: float) -> None:
    logits, labels = synthetic(true_temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.08)
    # the fit's NLL is no worse than the truth's, and better than T = 1's where the truth is not 1
    assert negative_log_likelihood(logits, labels, fitted) <= negative_log_likelihood(logits, labels, true_temperature)
    assert fit_temperature(logits, labels) == fitted  # deterministic


def test_fit_stays_within_its_bounds_and_flat_logits_keep_t_1() -> None:
    logits = np.zeros((50, 6))
    assert fit_temperature(logits, np.arange(50) % 6) == 1.0
    sharp = np.eye(6)[np.arange(60) % 6] * 3.0  # always right and confident: wants T -> 0
    fitted = fit_temperature(sharp, np.arange(60) % 6)  # as sharp as it goes: the NLL is ~0 from T < 0.1 down
    assert MIN_TEMPERATURE <= fitted < 0.1
    assert negative_log_likelihood(sharp, np.arange(60) % 6, fitted) < 1e-12
    wrong = np.eye(6)[(np.arange(60) + 1) % 6] * 5.0  # always wrong: wants T -> infinity
    assert fit_temperature(wrong, np.arange(60) % 6) == pytest.approx(MAX_TEMPERATURE, rel=1e-3)


@pytest.mark.parametrize(
    ("logits", "labels"),
    [
        (np.zeros((0, 6)), np.zeros(0, dtype=int)),
        (np.zeros((4, 6)), np.array([0, 1, 2])),
        (np.zeros((3, 6)), np.array([0, 1, 6])),
        (np.zeros((3, 6)), np.array([0.0, 1.0, 2.0])),
        (np.full((3, 6), np.nan), np.array([0, 1, 2])),
        (np.zeros(6), np.array([0])),
    ],
)
def test_fit_refuses_malformed_input(logits: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fit_temperature(logits, labels)


def test_ece_is_small_when_calibrated_and_large_when_over_confident() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, size=(20_000, 6))
    truth = softmax(logits)
    labels = draw(rng, truth)
    assert expected_calibration_error(truth, labels) < 0.02
    over_confident = softmax(logits, 0.3)
    assert expected_calibration_error(over_confident, labels) > 0.15
    # and the fit repairs it: scaling the over-confident logits by the fitted T brings ECE back down
    sharpened = logits / 0.3
    fitted = fit_temperature(sharpened, labels)
    assert fitted == pytest.approx(1 / 0.3, rel=0.08)
    assert expected_calibration_error(softmax(sharpened, fitted), labels) < 0.02


def test_ece_and_bins_by_hand() -> None:
    probabilities = np.array(
        [
            [0.95, 0.01, 0.01, 0.01, 0.01, 0.01],  # bin (0.9, 1.0], right
            [0.01, 0.95, 0.01, 0.01, 0.01, 0.01],  # bin (0.9, 1.0], wrong
            [0.55, 0.09, 0.09, 0.09, 0.09, 0.09],  # bin (0.5, 0.6], right
            [0.6, 0.08, 0.08, 0.08, 0.08, 0.08],  # bin (0.5, 0.6]: upper edge inclusive, wrong
        ]
    )
    labels = np.array([0, 0, 0, 1])
    bins = reliability_bins(probabilities, labels)
    assert len(bins) == 10 and sum(b.count for b in bins) == 4
    assert [b.count for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert bins[9].lower == pytest.approx(0.9) and bins[9].upper == 1.0
    assert bins[9].confidence == pytest.approx(0.95) and bins[9].accuracy == 0.5
    assert bins[5].confidence == pytest.approx(0.575) and bins[5].accuracy == 0.5
    assert math.isnan(bins[0].confidence) and math.isnan(bins[0].accuracy)
    expected = 0.5 * abs(0.5 - 0.95) + 0.5 * abs(0.5 - 0.575)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)
    assert len(reliability_bins(probabilities, labels, bins=3)) == 3
    with pytest.raises(ValueError):
        reliability_bins(probabilities, labels, bins=0)


def test_softmax_keeps_labels_and_is_monotone_in_the_margin() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 3.0, size=(500, 6)).astype(np.float32)
    plain = softmax(logits)
    old = np.exp(logits - logits.max(axis=-1, keepdims=True))  # the runtime's formula before calibration
    np.testing.assert_array_equal(plain, old / old.sum(axis=-1, keepdims=True))
    assert plain.dtype == np.float32
    for temperature in (0.5, 2.0, 7.0):
        scaled = softmax(logits, temperature)
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(scaled.argmax(axis=1), logits.argmax(axis=1))
        np.testing.assert_array_equal(np.argsort(scaled, axis=1, kind="stable")[:, -1], logits.argmax(axis=1))
    margins = np.linspace(0.0, 10.0, 50)
    rows = np.zeros((50, 6))
    rows[:, 0] = margins
    for temperature in (0.5, 1.0, 2.0):
        confidence = softmax(rows, temperature)[:, 0]
        assert (np.diff(confidence) > 0).all()
    with pytest.raises(ValueError):
        softmax(logits, 0.0)


# -- the file -----------------------------------------------------------------------------------------


def test_calibration_round_trips_atomically(tmp_path: Path) -> None:
    assert load_calibration(tmp_path) is None
    calibration = Calibration(temperature=1.7, fitted_on="validation", examples=120, ece_before=0.2, ece_after=0.05)
    save_calibration(tmp_path, calibration)
    assert load_calibration(tmp_path) == calibration
    save_calibration(tmp_path, Calibration(temperature=2.0))
    assert load_calibration(tmp_path) == Calibration(temperature=2.0)
    assert [p.name for p in tmp_path.iterdir()] == [CALIBRATION_FILE]  # no temporary file left behind
    data = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    data["written_by_a_newer_emostream"] = True  # unknown keys are ignored
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(data))
    assert load_calibration(tmp_path) == Calibration(temperature=2.0)


HOSTILE = {
    "not json": b"temperature = 2",
    "empty": b"",
    "a list": b"[1.5]",
    "a number": b"1.5",
    "no temperature": b'{"fitted_on": "validation"}',
    "zero": b'{"temperature": 0}',
    "negative": b'{"temperature": -1.5}',
    "nan": b'{"temperature": NaN}',
    "infinite": b'{"temperature": Infinity}',
    "huge": b'{"temperature": 1e308}',
    "tiny": b'{"temperature": 1e-300}',
    "a string": b'{"temperature": "1.5"}',
    "a bool": b'{"temperature": true}',
    "null": b'{"temperature": null}',
    "an object": b'{"temperature": {"value": 1.5}}',
    "examples a string": b'{"temperature": 1.5, "examples": "many"}',
    "examples a float": b'{"temperature": 1.5, "examples": 1.5}',
    "fitted_on a number": b'{"temperature": 1.5, "fitted_on": 3}',
    "negative ece": b'{"temperature": 1.5, "ece_before": -0.1}',
    "nan nll": b'{"temperature": 1.5, "nll_after": NaN}',
    "not utf-8": b'{"temperature": 1.5, "fitted_on": "\xff\xfe"}',
    "too big": b'{"temperature": 1.5, "fitted_on": "' + b"x" * 100_000 + b'"}',
}


@pytest.mark.parametrize("content", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_calibration_files_are_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / CALIBRATION_FILE).write_bytes(content)
    with pytest.raises(ValueError, match=CALIBRATION_FILE):
        load_calibration(tmp_path)


def test_a_calibration_directory_instead_of_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / CALIBRATION_FILE).mkdir()
    with pytest.raises(ValueError, match=CALIBRATION_FILE):
        load_calibration(tmp_path)


# -- every runtime applies it -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT classifier with the six labels, its head scaled up so the logits spread,
    exported to ONNX (fp32 and int8) as ``train`` does: a version directory with no calibration."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from emostream.trainer.export import export_onnx

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("calibration") / "v0001"
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        id2label=ID2LABEL,
        label2id=LABEL2ID,
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(60.0)  # random heads give logits near 0: spread them over a few units
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    export_onnx(directory)
    return directory


@pytest.fixture(scope="module")
def calibrated(classifier: Path) -> Path:
    """The same version with a calibration.json of T = 2.5."""
    directory = classifier.parent / "v0002"
    shutil.copytree(classifier, directory)
    save_calibration(directory, Calibration(temperature=TEMPERATURE, fitted_on="a test", examples=10))
    return directory


RUNTIMES = ["torch-fp32", "onnx-fp32", "onnx-int8"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_runtime_applies_the_versions_temperature(name: str, classifier: Path, calibrated: Path) -> None:
    plain = build_runtime(name, classifier, device="cpu")
    scaled = build_runtime(name, calibrated, device="cpu")
    assert plain.temperature == 1.0 and plain.calibration is None
    assert scaled.temperature == TEMPERATURE and scaled.calibration is not None
    logits = scaled.predict_logits(TEXTS)
    np.testing.assert_array_equal(logits, plain.predict_logits(TEXTS))  # logits stay raw
    before, after = plain.predict_proba(TEXTS), scaled.predict_proba(TEXTS)
    np.testing.assert_allclose(after.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))  # same labels
    assert np.abs(after - before).max() > 0.01  # T != 1 changes the confidences
    assert (after.max(axis=1) <= before.max(axis=1) + 1e-6).all()  # T > 1 only softens
    np.testing.assert_allclose(after, softmax(logits, TEMPERATURE), rtol=1e-5, atol=1e-7)
    # within a row, log-odds between labels are the logit margins divided by T: monotone in the margin
    top = logits.argmax(axis=1)
    rows = np.arange(len(TEXTS))
    for other in range(len(LABELS)):
        log_odds = np.log(after[rows, top]) - np.log(after[rows, other])
        np.testing.assert_allclose(log_odds, (logits[rows, top] - logits[rows, other]) / TEMPERATURE, atol=1e-4)


def test_runtimes_agree_under_calibration(calibrated: Path) -> None:
    reference = build_runtime("torch-fp32", calibrated, device="cpu").predict_proba(TEXTS)
    np.testing.assert_allclose(build_runtime("onnx-fp32", calibrated).predict_proba(TEXTS), reference, atol=1e-4)
    assert np.abs(build_runtime("onnx-int8", calibrated).predict_proba(TEXTS) - reference).max() < 0.05


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_version_without_calibration_serves_exactly_as_before(name: str, classifier: Path) -> None:
    runtime = build_runtime(name, classifier, device="cpu")
    logits = runtime.predict_logits(TEXTS)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))  # predict_proba before calibration existed
    np.testing.assert_array_equal(runtime.predict_proba(TEXTS), exp / exp.sum(axis=-1, keepdims=True))


def test_benchmark_fixed_ignores_calibration(classifier: Path, calibrated: Path) -> None:
    plain, scaled = build_runtime(FIXED_RUNTIME, classifier), build_runtime(FIXED_RUNTIME, calibrated)
    assert scaled.temperature == 1.0
    np.testing.assert_array_equal(scaled.predict_proba(TEXTS), plain.predict_proba(TEXTS))


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_hostile_calibration_file_refuses_to_load(name: str, classifier: Path, tmp_path: Path) -> None:
    directory = tmp_path / "v0003"
    shutil.copytree(classifier, directory)
    (directory / CALIBRATION_FILE).write_text('{"temperature": -2}')
    with pytest.raises(ValueError, match=CALIBRATION_FILE):
        build_runtime(name, directory, device="cpu")


# -- the report ---------------------------------------------------------------------------------------


def test_calibrate_fits_saves_and_serves(classifier: Path, tmp_path: Path) -> None:
    from emostream.trainer.calibration_report import calibrate

    directory = tmp_path / "v0004"
    shutil.copytree(classifier, directory)
    texts = TEXTS * 6
    labels = [i % len(LABELS) for i in range(len(texts))]
    calibration = calibrate(directory, texts, labels, fitted_on="sixty made-up tweets", max_length=64)
    assert load_calibration(directory) == calibration
    assert calibration.fitted_on == "sixty made-up tweets" and calibration.examples == 60
    assert MIN_TEMPERATURE <= calibration.temperature <= MAX_TEMPERATURE
    assert calibration.nll_after is not None and calibration.nll_before is not None
    assert calibration.nll_after <= calibration.nll_before + 1e-9  # the fit never makes the NLL it minimises worse
    assert build_runtime("torch-fp32", directory, device="cpu").temperature == calibration.temperature


def test_calibrate_splits_writes_the_plot_metrics_and_section(classifier: Path, tmp_path: Path) -> None:
    from emostream.trainer.calibration_report import calibrate_splits

    directory = tmp_path / "v0005"
    shutil.copytree(classifier, directory)
    labels = [i % len(LABELS) for i in range(len(TEXTS))]
    splits = {"validation": (TEXTS, labels), "test": (TEXTS[::-1], labels)}
    plot = directory / "reliability.png"
    result = calibrate_splits(directory, splits, fit_on="validation", fitted_on="made-up tweets", plot=plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_calibration(directory) == result.calibration
    metrics = result.metrics()
    json.dumps(metrics, allow_nan=False)  # plain JSON
    assert metrics["temperature"] == result.calibration.temperature and metrics["fit_split"] == "validation"
    assert set(metrics["sets"]) == {"validation", "test"}
    assert set(metrics["sets"]["test"]) == {"examples", "ece_before", "ece_after", "nll_before", "nll_after"}
    section = result.section()
    assert section.startswith("\n## Calibration")
    assert f"T = {result.calibration.temperature:.4f}" in section and "made-up tweets" in section
    assert "| validation (fitted on) |" in section and "| test |" in section
    assert "![Reliability diagram](reliability.png)" in section
    assert "of tweets scored at confidence ~0.7, about 70% are right" in section
    with pytest.raises(ValueError, match="no split"):
        calibrate_splits(directory, splits, fit_on="train", fitted_on="")


def test_plot_reliability_one_panel_per_set(tmp_path: Path) -> None:
    from emostream.trainer.calibration_report import plot_reliability

    logits, labels = synthetic(2.0, n=500)
    curves = {"uncalibrated": (softmax(logits), labels), "calibrated": (softmax(logits, 2.0), labels)}
    path = plot_reliability(curves, tmp_path / "out" / "reliability.png", "a title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_reliability({}, tmp_path / "none.png", "nothing")


@pytest.mark.integration
def test_train_writes_the_calibration_and_its_report(trained_registry: Path) -> None:
    version = trained_registry / "v0001"
    calibration = load_calibration(version)
    assert calibration is not None and calibration.examples == 120  # fitted on the validation split
    assert "validation" in calibration.fitted_on
    assert (version / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((version / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == calibration.temperature
    assert set(metrics["calibration"]["sets"]) == {"validation", "test"}
    assert metrics["calibration"]["sets"]["validation"]["ece_after"] == pytest.approx(calibration.ece_after)
    card = (version / "README.md").read_text()
    assert "## Calibration" in card and "reliability.png" in card and "## Results" in card
    assert build_runtime("torch-fp32", version, device="cpu").temperature == calibration.temperature
