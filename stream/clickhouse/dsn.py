"""Where ClickHouse is: a DSN parsed once, at the top, into the one value every part is handed.

Two kinds: ``chdb:///DIR`` is the embedded engine (chDB in this process, its data in ``DIR``, which one
process owns at a time), anything else is a server that clickhouse-connect reaches over HTTP(S).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EMBEDDED_SCHEME = "chdb://"


@dataclass(frozen=True)
class ClickHouseDsn:
    """A ClickHouse DSN as given (``url``, what clickhouse-connect takes) and what it means."""

    url: str

    @classmethod
    def of(cls, dsn: ClickHouseDsn | str) -> ClickHouseDsn:
        """``dsn`` as this type: the value itself, or a DSN given as text (by a test, a script, a state file)."""
        return dsn if isinstance(dsn, ClickHouseDsn) else cls(dsn)

    @classmethod
    def embedded_in(cls, directory: Path) -> ClickHouseDsn:
        """The embedded engine's DSN for a data directory (made absolute: the worker may change directory)."""
        return cls(f"{EMBEDDED_SCHEME}{directory.resolve()}")

    @property
    def embedded(self) -> bool:
        """True for chDB in this process, False for a server."""
        return self.url.startswith(EMBEDDED_SCHEME)

    @property
    def directory(self) -> Path | None:
        """The data directory of the embedded engine, or None for a server."""
        if not self.embedded:
            return None
        location = self.url.removeprefix(EMBEDDED_SCHEME)
        return Path(location) if location.startswith("/") else None

    def __str__(self) -> str:
        return self.url
