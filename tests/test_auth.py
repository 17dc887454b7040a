"""The endpoint's request guard: unit tests of each rule, without a server."""

from __future__ import annotations

import stat
from pathlib import Path

from stream.auth import RequestGuard, new_token, read_token, write_token

TOKEN = "t0ken-value"


def headers(**extra: str) -> dict[str, str]:
    return {"Host": "127.0.0.1:8123", "Authorization": f"Bearer {TOKEN}", **extra}


def test_the_token_passes_and_everything_else_is_refused() -> None:
    guard = RequestGuard(TOKEN, "127.0.0.1", 8123)
    assert guard.refusal(headers()) is None
    assert guard.refusal(headers(Host="localhost:8123", Origin="http://localhost:8123")) is None
    assert guard.refusal({"Host": "127.0.0.1:8123"}) == (
        401,
        "missing or wrong credential (Authorization: Bearer <token>)",
    )
    assert guard.refusal(headers(Authorization="Bearer wrong"))[0] == 401  # type: ignore[index]
    assert guard.refusal(headers(Authorization=TOKEN))[0] == 401  # type: ignore[index]  # no scheme
    assert guard.refusal(headers(Authorization=f"Basic {TOKEN}"))[0] == 401  # type: ignore[index]
    assert guard.refusal(headers(Origin="http://evil.example"))[0] == 403  # type: ignore[index]
    assert guard.refusal(headers(Origin="http://127.0.0.1:9999"))[0] == 403  # type: ignore[index]  # other port
    assert guard.refusal(headers(**{"Sec-Fetch-Site": "cross-site"}))[0] == 403  # type: ignore[index]
    assert guard.refusal(headers(Host="rebound.evil.example:8123"))[0] == 403  # type: ignore[index]  # DNS rebinding


def test_a_non_loopback_endpoint_does_not_pin_the_host_header() -> None:
    guard = RequestGuard(TOKEN, "0.0.0.0", 6066)  # in a container, reached as worker:6066
    assert guard.refusal(headers(Host="worker:6066")) is None
    assert guard.refusal({"Host": "worker:6066"})[0] == 401  # type: ignore[index]


def test_the_token_file_is_private_from_the_start(tmp_path: Path) -> None:
    token = new_token()
    assert len(token) >= 40 and token != new_token()
    path = tmp_path / "x.endpoint.token"
    write_token(path, token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token(path) == token
    assert read_token(tmp_path / "missing") is None
