from pathlib import Path

import pytest
from pydantic import ValidationError

from emostream.settings import load_settings


def test_environment_overrides_defaults_and_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_REGISTRY", "/srv/models")
    monkeypatch.setenv("EMOSTREAM_EPOCHS", "5")
    settings = load_settings(epochs=2.0, registry=None)
    assert settings.registry == Path("/srv/models")
    assert settings.epochs == 2.0
    assert load_settings().batch_size == 32


def test_bad_environment_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_BATCH_SIZE", "-3")
    with pytest.raises(ValidationError, match="batch_size"):
        load_settings()


def test_the_embedded_broker_gets_its_group_timing_unless_one_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert (defaults.session_timeout, defaults.heartbeat_interval) == (6.0, 1.5)  # what Apache Kafka accepts
    embedded = defaults.on_embedded_broker()
    assert (embedded.session_timeout, embedded.heartbeat_interval) == (2.0, 0.5)
    assert embedded.worker_setup().kafka.session_timeout == 2.0
    monkeypatch.setenv("EMOSTREAM_SESSION_TIMEOUT", "10")
    configured = load_settings().on_embedded_broker()
    assert (configured.session_timeout, configured.heartbeat_interval) == (10.0, 0.5)  # the user's session stays
    assert load_settings(heartbeat_interval=1.0).on_embedded_broker().heartbeat_interval == 1.0


def test_more_in_sync_replicas_than_replicas_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(replication_factor=3, min_insync_replicas=2).worker_setup().kafka.min_insync_replicas == 2
    monkeypatch.setenv("EMOSTREAM_MIN_INSYNC_REPLICAS", "2")
    with pytest.raises(ValidationError, match=r"min_insync_replicas .2. is more than replication_factor .1."):
        load_settings()


def test_every_setting_is_a_flag_of_some_command() -> None:
    import typer.main

    from emostream.cli import app
    from emostream.settings import Settings

    group = typer.main.get_command(app)
    flags = {param.name for command in group.commands.values() for param in command.params}  # type: ignore[attr-defined]
    assert set(Settings.model_fields) - flags == set()


def test_flags_reach_the_serving_commands(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("worker", "--home", tmp_path / "h", "--max-batch", "-1")
    assert result.returncode == 2
    assert "max_batch" in result.stderr and "greater than 0" in result.stderr
