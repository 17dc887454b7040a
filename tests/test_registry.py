import json
import threading
from pathlib import Path

import pytest
from emostream.model.registry import ModelRegistry, RegistryError


def stage(registry: ModelRegistry, val_f1: float | None) -> Path:
    staged = registry.staging_dir()
    (staged / "config.json").write_text("{}")
    if val_f1 is not None:
        (staged / "metrics.json").write_text(json.dumps({"validation": {"f1_weighted": val_f1}}))
    return staged


def test_versions_number_up_and_current_follows_promotion(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.current() is None
    with pytest.raises(RegistryError, match="emostream train"):
        registry.require_current()
    first = registry.publish(stage(registry, 0.90))
    assert first.name == "v0001" and registry.should_promote(first)
    registry.promote(first)
    worse = registry.publish(stage(registry, 0.85))
    better = registry.publish(stage(registry, 0.92))
    assert [v.name for v in registry.versions()] == ["v0001", "v0002", "v0003"]
    assert not registry.should_promote(worse)
    assert registry.should_promote(better)
    registry.promote(better)
    assert registry.require_current().name == "v0003"
    assert (tmp_path / "models" / "current").read_text().strip() == "v0003"
    assert not list((tmp_path / "models").glob(".staging-*"))


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    staged = [stage(registry, 0.5) for _ in range(8)]
    threads = [threading.Thread(target=registry.publish, args=(s,)) for s in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [v.name for v in registry.versions()] == [f"v{i:04d}" for i in range(1, 9)]


def test_current_pointing_at_a_missing_version_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "current").write_text("v0042\n")
    with pytest.raises(RegistryError, match="no version 'v0042'"):
        ModelRegistry(tmp_path).current()
