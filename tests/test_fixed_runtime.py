"""The ``benchmark-fixed`` runtime: valid distributions without a model, chosen only when asked for by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import BertConfig

from emostream.model import runtime as rt
from emostream.model.config import RuntimeConfig
from emostream.model.runtime import FIXED_RUNTIME, FixedProbabilities, build_runtime, choose_runtime, load_runtime
from emostream.schemas import ID2LABEL, LABEL2ID, LABELS
from emostream.settings import Settings
from emostream.stream.worker.scoring import BatchScorer, RawRecord

TEXTS = ["i feel great", "so sad today", "", "what a surprise!", "x" * 300, "i feel great", "angry at the bus"]


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    """A version directory with only the config the runtime reads (no weights: none are loaded)."""
    directory = tmp_path / "v0007"
    BertConfig(num_labels=len(LABELS), id2label=ID2LABEL, label2id=LABEL2ID).save_pretrained(directory)
    return directory


def test_fixed_probabilities_are_valid_varied_and_stable(version_dir: Path) -> None:
    model = build_runtime(FIXED_RUNTIME, version_dir)
    assert isinstance(model, FixedProbabilities)
    assert model.runtime_name == "benchmark-fixed" and model.registry_version == "v0007"
    assert model.version == "v0007+benchmark-fixed"  # what its rows record: never the real version's name
    probabilities = model.predict_proba(TEXTS)
    assert probabilities.shape == (len(TEXTS), len(LABELS))
    assert np.all(probabilities > 0) and np.all(probabilities < 1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probabilities[0], probabilities[5])  # same text, same row (re-deliveries)
    np.testing.assert_array_equal(model.predict_proba(TEXTS), probabilities)  # and across calls
    assert len({tuple(row) for row in probabilities.tolist()}) == len(set(TEXTS))  # rows differ by text
    many = model.predict_proba([f"tweet {i}" for i in range(600)])
    assert set(many.argmax(axis=1).tolist()) == set(range(len(LABELS)))  # every label comes up
    assert many.max(axis=1).min() < 0.6 < many.max(axis=1).max()  # some rows fall under the review threshold
    assert model.predict_proba([]).shape == (0, len(LABELS))


def test_fixed_runtime_feeds_the_scorer(version_dir: Path) -> None:
    records = [
        RawRecord("tweets", 0, i, b"k", json.dumps({"id": f"t{i}", "text": text}).encode(), 1_700_000_000.0)
        for i, text in enumerate(TEXTS)
        if text
    ]
    result = BatchScorer(build_runtime(FIXED_RUNTIME, version_dir), 0.6).score(records)
    assert len(result.scores) == len(records) and len(result.dead_letters) == 0
    for score in result.scores:
        assert score.model_version == "v0007+benchmark-fixed" and score.label in LABELS
        assert 0 <= score.margin <= score.confidence <= 1
        assert score.confidence == max(score.probabilities())


def test_auto_never_chooses_the_fixed_runtime(version_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # even a serving check that (wrongly) lists it as accepted does not make it a candidate
    checks = {name: {"accuracy": 0.9, "label_agreement": 1.0, "accepted": True} for name in (FIXED_RUNTIME,)}
    (version_dir / "serving.json").write_text(json.dumps({"runtimes": checks}))
    monkeypatch.setattr(rt, "cpu_has_native_bf16", lambda: True)
    assert choose_runtime(Settings(device="cpu"), version_dir) == "torch-fp32"
    assert choose_runtime(Settings(device="cpu", runtime=FIXED_RUNTIME), version_dir) == FIXED_RUNTIME
    assert Settings().runtime == "auto"
    assert "never for serving" in (Settings.model_fields["runtime"].description or "")


def test_selected_by_name_through_settings(version_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_RUNTIME", FIXED_RUNTIME)
    model = load_runtime(Settings(device="cpu"), version_dir)
    assert isinstance(model, FixedProbabilities)


def test_refuses_a_model_with_other_labels(tmp_path: Path) -> None:
    BertConfig(num_labels=2).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="labels"):
        FixedProbabilities(tmp_path / "other")


def test_its_rows_rank_below_every_registry_version_and_hot_swap_sees_the_version_it_serves(
    version_dir: Path,
) -> None:
    import asyncio

    from emostream.model.registry import version_order
    from emostream.stream.worker.model_swap import ModelWatcher

    model = build_runtime(FIXED_RUNTIME, version_dir)
    # a tweet also scored by a real model counts as the real model's in the trends (newest wins)
    assert version_order(model.version) < version_order("v0001") < version_order("v0007")
    # serving v0007 without a model: `current` = v0007 is the version in use, nothing to reload
    (version_dir.parent / "current").write_text("v0007\n")
    loads: list[Path] = []
    watcher = ModelWatcher(
        Settings().piece(RuntimeConfig),
        version_dir.parent,
        BatchScorer(model, 0.6),
        loader=lambda config, path: loads.append(path),  # type: ignore[func-returns-value]
    )
    assert asyncio.run(watcher.check()) is False and loads == []
