"""The web endpoint's credential: a bearer token, checked on every request before anything runs.

A loopback port is not a boundary: any web page open in the user's browser can send requests to it,
and DNS rebinding can make such a page look same-origin. So every request needs the token (which a
page cannot read: it lives in a mode-0600 file and in the process's settings), requests that a browser
marks as coming from another origin are refused, and on a loopback address the Host header must name
the endpoint itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token(path: Path, token: str) -> None:
    """Create the file with mode 0600 from the start (never world-readable, not even for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    os.replace(tmp, path)


def read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def token_file(endpoint_file: Path) -> Path:
    """Beside the endpoint file: ``clickhouse.endpoint.json`` -> ``clickhouse.endpoint.token``."""
    return endpoint_file.with_suffix(".token")


class RequestGuard:
    """Decides whether a request may reach a handler: (status, reason) to refuse it, or None."""

    def __init__(self, token: str, host: str, port: int) -> None:
        self._token = token.encode()
        self._origins = {f"http://{name}:{port}" for name in _names_of(host)}
        self._hosts = {f"{name}:{port}" for name in _names_of(host)} if _is_loopback(host) else None

    def refusal(self, headers: Mapping[str, str]) -> tuple[int, str] | None:
        origin = headers.get("Origin")
        if origin is not None and origin not in self._origins:
            return 403, f"requests from another origin ({origin}) are refused"
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site requests are refused"
        if self._hosts is not None and headers.get("Host") not in self._hosts:
            return 403, f"unexpected Host header {headers.get('Host')!r}"
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            return 401, "missing or wrong credential (Authorization: Bearer <token>)"
        return None

    def middleware(self) -> Callable[..., Awaitable[Any]]:
        """An aiohttp middleware that applies the guard to every route, Faust's own pages included."""
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
            refused = self.refusal(request.headers)
            if refused is not None:
                status, reason = refused
                headers = {"WWW-Authenticate": 'Bearer realm="emostream"'} if status == 401 else None
                return web.json_response({"error": reason}, status=status, headers=headers)
            return await handler(request)

        return guard


def _names_of(host: str) -> set[str]:
    return {host, "localhost", "127.0.0.1", "[::1]"} if _is_loopback(host) else {host}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
