"""The model runtimes: chunking, runtime choice from the serving check, and backend agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emostream.model import runtime as rt
from emostream.model.runtime import batches_by_length, build_runtime, choose_runtime
from emostream.settings import Settings


def test_batches_by_length_cover_every_text_once_longest_first() -> None:
    texts = ["a", "aaaa", "aa", "aaaaaa", "aaa"]
    chunks = list(batches_by_length(texts, 2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert sorted(i for c in chunks for i in c) == list(range(5))
    assert [len(texts[i]) for c in chunks for i in c] == [6, 4, 3, 2, 1]


def write_check(directory: Path, accepted: dict[str, bool]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    runtimes = {name: {"accuracy": 0.9, "label_agreement": 1.0, "accepted": ok} for name, ok in accepted.items()}
    (directory / "serving.json").write_text(json.dumps({"runtimes": runtimes}))
    return directory


def test_auto_serves_only_what_the_check_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "cpu_has_native_bf16", lambda: True)
    cpu = Settings(device="cpu")
    assert choose_runtime(cpu, write_check(tmp_path / "a", {"onnx-int8": True, "torch-bf16": True})) == "onnx-int8"
    assert choose_runtime(cpu, write_check(tmp_path / "b", {"onnx-int8": False, "torch-bf16": True})) == "torch-bf16"
    assert choose_runtime(cpu, write_check(tmp_path / "c", {"onnx-int8": False, "torch-bf16": False})) == "torch-fp32"
    assert choose_runtime(cpu, tmp_path / "no-check") == "torch-fp32"
    monkeypatch.setattr(rt, "cpu_has_native_bf16", lambda: False)  # a bf16 verdict from another machine
    assert choose_runtime(cpu, tmp_path / "b") == "torch-fp32"
    assert choose_runtime(Settings(device="cpu", runtime="onnx-fp32"), tmp_path / "c") == "onnx-fp32"


@pytest.mark.integration
def test_backends_agree_on_a_trained_version(trained_registry: Path, small_data: Path) -> None:
    version = trained_registry / "v0001"
    check = json.loads((version / "serving.json").read_text())
    assert check["split"] == "validation" and "onnx-int8" in check["runtimes"]
    texts = [line.rpartition(";")[0] for line in (small_data / "test.txt").read_text().splitlines()]
    reference = build_runtime("torch-fp32", version).predict_proba(texts)
    np.testing.assert_allclose(build_runtime("onnx-fp32", version).predict_proba(texts), reference, atol=1e-4)
    int8 = build_runtime("onnx-int8", version).predict_proba(texts)
    assert np.abs(int8 - reference).max() < 0.05
    assert np.allclose(int8.sum(axis=1), 1.0, atol=1e-5)
