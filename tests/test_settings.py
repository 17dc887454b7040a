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
