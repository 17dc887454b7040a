"""A model registry on the file system: numbered versions and a ``current`` pointer that serving follows.

Layout::

    models/
      current            # one line: the version serving uses, e.g. "v0002"
      v0001/             # save_pretrained() weights + tokenizer, metrics.json, training.json, README.md
      v0002/
      .retrain.lock      # held by the retraining round in progress (`ModelRegistry.retrain_lock`)

A version is staged in a hidden directory and renamed into place, so readers never see half a model;
``current`` is replaced atomically, so a worker polling it reads either the old or the new version.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
CURRENT_FILE = "current"
METRICS_FILE = "metrics.json"
RETRAIN_FILE = "retrain.json"  # lineage of a version trained by `emostream retrain`
RETRAIN_LOCK_FILE = ".retrain.lock"  # one retraining round at a time (ModelRegistry.retrain_lock)


def version_order(name: str) -> tuple[bool, int, str]:
    """A sort key that makes the newest model version the largest: ``max(names, key=version_order)``.

    Registry names (``v0001``, ``v0002``, ... ``v10000``) compare by their number, not as strings
    (``"v10000" < "v9999"``); any other name (a checkpoint served straight from a directory) ranks
    below every registry name and among its kind by the string. The trends count a tweet scored by two
    versions once, by this order, and ClickHouse must agree: ``deploy/clickhouse/005_newest_version.sql``
    spells the same key in SQL, so the number is read as ASCII digits and must fit in 64 bits (past
    that, ClickHouse's ``toUInt64OrZero`` reads 0, and so does this).
    """
    match = re.fullmatch(r"v([0-9]{4,})", name)
    number = int(match.group(1)) if match else 0
    return (match is not None, number if number < 2**64 else 0, name)


class RegistryError(RuntimeError):
    """The registry is missing, empty or points at a version that is not there."""


class RetrainBusy(RegistryError):
    """Another retraining round holds the registry's lock (see :meth:`ModelRegistry.retrain_lock`)."""


@dataclass(frozen=True)
class ModelVersion:
    """One published version: its name (``vNNNN``) and its directory."""

    name: str
    path: Path

    @property
    def number(self) -> int:
        """The version's number (``v0007`` -> 7), which orders versions."""
        match = VERSION_PATTERN.match(self.name)
        assert match is not None
        return int(match.group(1))

    def metrics(self) -> dict[str, Any]:
        """The metrics written when the version was trained (empty when it has none)."""
        file = self.path / METRICS_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    def lineage(self) -> dict[str, Any]:
        """The version's ``retrain.json`` (empty for a version trained from scratch)."""
        file = self.path / RETRAIN_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    def validation_score(self) -> float | None:
        """The score promotion compares: weighted F1 on the validation split."""
        score: float | None = self.metrics().get("validation", {}).get("f1_weighted")
        return score


class ModelRegistry:
    """A directory of numbered versions and a ``current`` pointer: what every part serves or trains from."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[ModelVersion]:
        """Every published version, oldest first."""
        if not self.root.is_dir():
            return []
        found = [ModelVersion(p.name, p) for p in self.root.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name)]
        return sorted(found, key=lambda v: v.number)

    def get(self, name: str) -> ModelVersion:
        """The version of that name; RegistryError when there is none."""
        path = self.root / name
        if not (VERSION_PATTERN.match(name) and path.is_dir()):
            raise RegistryError(f"{self.root}: no version {name!r}")
        return ModelVersion(name, path)

    def pointer(self) -> str | None:
        """The name ``current`` holds, unchecked; None when there is no pointer (or it cannot be read)."""
        try:
            return (self.root / CURRENT_FILE).read_text().strip() or None
        except OSError:
            return None

    def current(self) -> ModelVersion | None:
        """The version ``current`` points at, or None before any was promoted."""
        name = self.pointer()
        return self.get(name) if name is not None else None

    def require_current(self) -> ModelVersion:
        """The serving version, or a clear error that says how to get one."""
        current = self.current()
        if current is None:
            raise RegistryError(f"{self.root}: no current model; train one with `emostream train`")
        return current

    def staging_dir(self) -> Path:
        """A fresh hidden directory inside the registry (same file system, so publish() can rename it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def publish(self, staged: Path) -> ModelVersion:
        """Give a staged directory the next version number; safe against concurrent publishers."""
        while True:
            versions = self.versions()
            name = f"v{(versions[-1].number if versions else 0) + 1:04d}"
            try:
                os.rename(staged, self.root / name)
            except OSError:
                if (self.root / name).exists():  # another publisher took the name: take the next one
                    continue
                raise
            return ModelVersion(name, self.root / name)

    @contextmanager
    def retrain_lock(self, wait: bool = False) -> Iterator[None]:
        """Held for a retraining round: two rounds never train for the same registry at once.

        An exclusive ``flock`` on the registry's ``.retrain.lock``, which names the holder (``pid N``) while
        it is held. A second holder, in another process or in this one (each holder opens the file anew),
        is refused with :class:`RetrainBusy` naming the first; with ``wait`` (``retrain --watch``) it waits
        until the first lets go instead. The kernel releases the lock of a process that dies, so a crashed
        round leaves no stale lock behind. Creates the registry directory if there is none yet.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / RETRAIN_LOCK_FILE).open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RetrainBusy(
                    f"{self.root}: a retraining round is running already ({holder}); try again later"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def promote(self, version: ModelVersion) -> None:
        """Point ``current`` at ``version`` atomically (a rename): running workers serve it from their next poll."""
        pointer = self.root / CURRENT_FILE
        tmp = pointer.with_name(f".{CURRENT_FILE}.{os.getpid()}")
        tmp.write_text(version.name + "\n")
        os.replace(tmp, pointer)

    def should_promote(self, candidate: ModelVersion) -> bool:
        """Promote the first model, or one that beats the current one on validation weighted F1."""
        current = self.current()
        if current is None:
            return True
        ours, theirs = candidate.validation_score(), current.validation_score()
        return theirs is None or (ours is not None and ours > theirs)
