"""Browser sessions for the web endpoint: a signed cookie, and the CSRF token that goes with it.

A browser cannot send a bearer header on a plain page load, so opening the printed URL
(``/review?token=...``) trades the token for a session cookie, as Jupyter does. The cookie is signed
(HMAC-SHA256) with a key derived from the credential it was issued for, which makes it:

- stateless: it survives a restart, and several servers sharing the credential accept each other's;
- revocable: change the credential and every session issued under it stops working;
- unforgeable without the credential, and bound to a scope (a reviewer's session opens the review
  and trends pages only, even though it is the same kind of cookie as an operator's);
- bound to a reviewer name that the server chose when it issued the cookie (the credential's, see
  ``emostream.stream.web.auth``): the client can neither pick it at sign-in nor change it later, since changing the
  payload breaks the signature. There is no endpoint that re-issues a session under another name;
- for a named reviewer, bound to their personal token too: the cookie carries the token's fingerprint,
  and the guard accepts it only while that token is the reviewer's live one (revoking them ends it).

State-changing requests made with the cookie must also carry ``X-CSRF-Token``: an HMAC of the session's
nonce that only a page of this origin can read (from ``/review/api/session``), so another site cannot
make a logged-in browser label items, even where SameSite does not hold (old browsers, same-site hosts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE_PREFIX = "emostream_session_"
REVIEWER_NAME_MAX = 64


class SessionError(ValueError):
    """A reviewer name or a cookie that cannot be used, with what is wrong with it."""


def check_reviewer(name: str) -> str:
    """A reviewer name as it is stored with each label: 1-64 printable characters, trimmed. The names
    come from the server's configuration (``EMOSTREAM_REVIEWER``), never from a request."""
    name = name.strip()
    if not name:
        raise SessionError("reviewer: must not be blank")
    if len(name) > REVIEWER_NAME_MAX:
        raise SessionError(f"reviewer: at most {REVIEWER_NAME_MAX} characters, got {len(name)}")
    if not name.isprintable():
        raise SessionError("reviewer: must not contain control characters")
    return name


@dataclass(frozen=True)
class Session:
    """What a genuine cookie says: scope, the reviewer name it was issued under, nonce, issue time (epoch s)."""

    scope: str  # "admin" or "review": what the credential that opened it may do
    reviewer: str  # chosen by the server at issue, signed with the rest
    nonce: str  # identifies the session (leases are held per session, not per name)
    issued_at: float
    key: str = ""  # a named reviewer's session: the fingerprint of the personal token that opened it


class SessionCodec:
    """Issues and checks session cookies for a set of credentials, one signing key per scope."""

    def __init__(self, credentials: dict[str, str], max_age: float, clock: Callable[[], float] = time.time) -> None:
        """``credentials``: scope -> the token of that scope."""
        self._keys = {scope: _derive(token, "session") for scope, token in credentials.items()}
        self.max_age = max_age
        self._clock = clock

    def issue(self, scope: str, reviewer: str, key: str = "") -> tuple[str, Session]:
        """A new signed cookie value and its session; ``SessionError`` when the reviewer name is unusable.
        ``key``: the personal token's fingerprint, for a named reviewer's session."""
        session = Session(scope, check_reviewer(reviewer), secrets.token_urlsafe(12), self._clock(), key)
        fields = {"s": session.scope, "r": session.reviewer, "n": session.nonce, "t": int(session.issued_at)}
        body = json.dumps({**fields, "k": key} if key else fields, separators=(",", ":")).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(scope, payload)}", session

    def read(self, cookie: str) -> Session | None:
        """The session of a genuine, unexpired cookie; None for anything else (never an exception)."""
        payload, _, signature = cookie.partition(".")
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            scope, reviewer, nonce, issued = str(data["s"]), str(data["r"]), str(data["n"]), float(data["t"])
            key = str(data.get("k", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if scope not in self._keys or not hmac.compare_digest(signature, self._sign(scope, payload)):
            return None
        if not 0 <= self._clock() - issued <= self.max_age:
            return None
        return Session(scope, reviewer, nonce, issued, key)

    def csrf_token(self, session: Session) -> str:
        """The ``X-CSRF-Token`` that requests changing state with this session's cookie must carry."""
        return hmac.new(self._keys[session.scope], f"csrf:{session.nonce}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        """Whether the request's CSRF token is this session's (compared in constant time); a missing one is not."""
        return given is not None and hmac.compare_digest(given, self.csrf_token(session))

    def _sign(self, scope: str, payload: str) -> str:
        return hmac.new(self._keys[scope], payload.encode(), hashlib.sha256).hexdigest()


def _derive(token: str, purpose: str) -> bytes:
    return hmac.new(token.encode(), f"emostream-{purpose}-v1".encode(), hashlib.sha256).digest()


def cookie_name(port: int) -> str:
    """Per port: browsers share cookies across the ports of a host, and two stacks must not clash."""
    return f"{COOKIE_PREFIX}{port}"
