import json
import os
import threading
import time
from pathlib import Path

import pytest

from emostream.model.registry import ModelRegistry, RegistryError, RetrainBusy


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


def test_a_second_retraining_round_is_refused_while_one_holds_the_lock(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")  # no directory yet: the lock makes it
    lock_file = tmp_path / "models" / ".retrain.lock"
    with registry.retrain_lock():
        assert lock_file.read_text() == f"pid {os.getpid()}\n"  # the holder is named
        busy = rf"models: a retraining round is running already \(pid {os.getpid()}\); try again later"
        with pytest.raises(RetrainBusy, match=busy), ModelRegistry(tmp_path / "models").retrain_lock():
            pytest.fail("two holders at once")
    assert lock_file.read_text() == ""
    with registry.retrain_lock():  # let go: the next round takes it
        pass
    assert issubclass(RetrainBusy, RegistryError)  # a user error: one line, exit 2
    assert registry.versions() == []  # the lock file is no version


def test_a_waiting_round_starts_once_the_running_one_lets_go(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    started: list[float] = []

    def second_round() -> None:
        with ModelRegistry(tmp_path).retrain_lock(wait=True):
            started.append(time.monotonic())

    with registry.retrain_lock():
        waiter = threading.Thread(target=second_round)
        waiter.start()
        time.sleep(0.3)
        assert not started and waiter.is_alive()  # it waits, is not refused
        released = time.monotonic()
    waiter.join(10)
    assert len(started) == 1 and started[0] >= released
