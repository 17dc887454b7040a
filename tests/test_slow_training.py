"""The real fine-tune of the default model on the full data: minutes, so skipped unless `-m slow`."""

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_default_training_beats_the_book(shared_data: Path, tmp_path: Path) -> None:
    result = run_cli("train", "--data", shared_data, "--registry", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    version = Path(result.stdout.strip().splitlines()[-1])
    test = json.loads((version / "metrics.json").read_text())["test"]
    assert test["accuracy"] >= 0.93
    assert test["f1_weighted"] >= 0.93
