"""Small files through which embedded-mode processes find each other.

``up`` owns the chDB directory (one process per directory) and the embedded broker; ``sql``, ``ingest``
and ``demo`` read these files to reach them: the broker's address, and the worker's loopback web
endpoint that answers read-only SQL on the data it owns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_state(path: Path, **fields: Any) -> None:
    """Write the fields and this process's pid, atomically (a temporary file renamed): readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), **fields}) + "\n")
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    """The file's fields if the process that wrote it is still alive, else None (stale files are ignored)."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def remove_state(path: Path) -> bool:
    """Remove the file if this process wrote it; True if it did."""
    try:
        state = json.loads(path.read_text())
        if state.get("pid") == os.getpid():
            path.unlink()
            return True
    except (OSError, ValueError):
        pass
    return False


def broker_file(home: Path) -> Path:
    """Where ``up`` records the embedded broker's address: ``broker.json`` in emostream's home directory."""
    return home / "broker.json"


def endpoint_file(dsn_dir: Path) -> Path:
    """Beside the chDB directory it serves, so it is found from the DSN alone."""
    return dsn_dir.with_name(dsn_dir.name + ".endpoint.json")


class NoBrokerError(RuntimeError):
    """Neither a configured Kafka nor a running embedded broker."""


def resolve_bootstrap(kafka_bootstrap: str | None, home: Path) -> str:
    """The configured Kafka, else the embedded broker a running ``emostream up`` started."""
    if kafka_bootstrap:
        return kafka_bootstrap
    state = read_state(broker_file(home))
    if state:
        return str(state["bootstrap"])
    raise NoBrokerError(
        "no Kafka to talk to: set EMOSTREAM_KAFKA_BOOTSTRAP (or --kafka-bootstrap), "
        "or start the embedded stack with `emostream up`"
    )
