"""The client side of the worker's web endpoint: find it from the data directory, and ask it SQL.

In the embedded mode one process owns the chDB directory, so `emostream sql`, the demo and the tests
send their statements to that process. They find it through the files it writes beside the directory:
the endpoint's address, and the credential (mode 0600) without which it answers nothing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stream.auth import read_token, token_file
from stream.sql import SqlError, SqlResult
from stream.state import endpoint_file, read_state


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str

    @classmethod
    def find(cls, data_dir: Path) -> Endpoint | None:
        """The live endpoint serving this chDB directory, or None when no process serves it."""
        state = read_state(endpoint_file(data_dir))
        if not state:
            return None
        token = read_token(token_file(endpoint_file(data_dir)))
        if token is None:
            raise SqlError(f"{token_file(endpoint_file(data_dir))}: the endpoint's credential is missing or unreadable")
        return cls(str(state["url"]), token)

    def sql(self, statement: str, timeout: float = 120.0) -> SqlResult:
        request = urllib.request.Request(
            f"{self.url}/sql",
            data=statement.encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return SqlResult.from_json_compact(response.read())
        except urllib.error.HTTPError as exc:
            raise SqlError(_error_of(exc)) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise SqlError(f"the endpoint {self.url} did not answer: {getattr(exc, 'reason', exc)}") from None


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"
