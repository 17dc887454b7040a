"""Light commands start light: they must not import the model stack (seconds of torch and friends).

Each command runs in a fresh interpreter through the real entry point; what it imported is read from
``sys.modules`` at exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink

HEAVY = ("torch", "transformers", "sklearn", "datasets", "onnxruntime", "faust", "pandas", "matplotlib")
PROBE = """
import atexit, json, sys
atexit.register(lambda: print("\\nMODULES " + json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))
sys.argv = ["emostream", *json.loads(sys.argv[1])]
from emostream.cli import main
main()
"""


def imported_by(*args: str, env: dict[str, str] | None = None) -> set[str]:
    import os

    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


@pytest.mark.parametrize(
    "args",
    [("--help",), ("sql", "--help"), ("ingest", "--help"), ("broker", "--help"), ("up", "--help"), ("train", "--help")],
)
def test_help_imports_no_model_stack(args: tuple[str, ...]) -> None:
    assert imported_by(*args) & set(HEAVY) == set()


def test_sql_and_models_import_no_model_stack(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sink = ClickHouseSink(Settings(home=home).resolved_clickhouse_dsn())
    sink.apply_schema()
    sink.close()
    loaded = imported_by("sql", "SELECT count() FROM emotion_scores", env={"EMOSTREAM_HOME": str(home)})
    assert "clickhouse_connect" in loaded  # it did run the statement, with the engine, and nothing heavier
    assert loaded & set(HEAVY) == set()
    assert imported_by("models", "--registry", str(tmp_path / "none")) & set(HEAVY) == set()
