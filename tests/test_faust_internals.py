"""The private parts of Faust, mode and aiokafka that the worker relies on are all still there.

``stream/kafka/faust_internals.py`` holds every use of them. A failure here names the attribute that is
gone and the versions the module was written for: reread the function that uses it against the new
release before raising the pins in ``pyproject.toml``.
"""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from emostream.stream.kafka import faust_internals
from emostream.stream.kafka.faust_internals import (
    PINNED_INTERNALS,
    TESTED_VERSIONS,
    FaustInternalsMissing,
    Internal,
    missing_internals,
    require_internals,
)

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
WRITTEN_FOR = ", ".join(f"{name} {tested}" for name, tested in TESTED_VERSIONS.items())


def pinned_requirements() -> dict[str, Requirement]:
    """The ``[project] dependencies`` of pyproject.toml for the libraries in ``TESTED_VERSIONS``."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    requirements = {Requirement(line).name: Requirement(line) for line in dependencies}
    return {name: requirements[name] for name in TESTED_VERSIONS if name in requirements}


@pytest.mark.parametrize("internal", PINNED_INTERNALS, ids=[internal.dotted for internal in PINNED_INTERNALS])
def test_a_pinned_internal_is_still_there(internal: Internal) -> None:
    installed = ", ".join(f"{name} {version(name)}" for name in TESTED_VERSIONS)
    assert internal.present(), (
        f"{internal.dotted} is gone: stream/kafka/faust_internals.py was written for {WRITTEN_FOR} "
        f"({installed} installed)"
    )


def test_nothing_is_missing_so_the_worker_may_start() -> None:
    assert missing_internals() == []
    require_internals()


def test_the_installed_versions_are_within_the_pinned_ranges() -> None:
    pins = pinned_requirements()
    assert set(pins) == set(TESTED_VERSIONS), "pyproject.toml must pin each library faust_internals.py relies on"
    for name, requirement in pins.items():
        assert requirement.specifier, f"{name} is not pinned in pyproject.toml: {requirement}"
        assert requirement.specifier.contains(TESTED_VERSIONS[name]), (
            f"pyproject.toml's {requirement} leaves out {name} {TESTED_VERSIONS[name]}, the version tested"
        )
        assert requirement.specifier.contains(version(name)), (
            f"{name} {version(name)} is installed, outside pyproject.toml's {requirement}: "
            f"stream/kafka/faust_internals.py was written for {WRITTEN_FOR}"
        )


def test_a_missing_internal_is_named_and_the_worker_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = (
        Internal("faust.transport.consumer", "Consumer", "_renamed_in_a_later_release"),
        Internal("faust.transport.drivers.aiokafka", "NoSuchClass", "_to_message"),
        Internal("no_such_module_of_faust", "Consumer", "_committed_offset"),
    )
    monkeypatch.setattr(faust_internals, "PINNED_INTERNALS", (*PINNED_INTERNALS, *gone))
    assert missing_internals() == [internal.dotted for internal in gone]
    with pytest.raises(FaustInternalsMissing) as refused:
        require_internals()
    message = str(refused.value)
    assert all(internal.dotted in message for internal in gone)
    assert all(f"{name} {tested}" in message for name, tested in TESTED_VERSIONS.items())

    from emostream.stream.worker.process import run_worker

    # the check comes first: nothing the worker was given is touched before it refuses
    required = [
        parameter
        for parameter in inspect.signature(run_worker).parameters.values()
        if parameter.default is inspect.Parameter.empty
    ]
    with pytest.raises(FaustInternalsMissing, match="_renamed_in_a_later_release"):
        run_worker(*[object() for _ in required])


def test_an_instance_attribute_counts_only_where_an_init_sets_it() -> None:
    assert Internal("aiokafka", "AIOKafkaConsumer", "_fetch_max_wait_ms").present()  # set in __init__ only
    assert not Internal("aiokafka", "AIOKafkaConsumer", "_fetch_max_wait_seconds").present()
