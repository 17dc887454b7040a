"""The web endpoint's credentials: checked on every request before anything runs.

A loopback port is not a boundary: any web page open in the user's browser can send requests to it,
and DNS rebinding can make such a page look same-origin. So every request needs the token (which a
page cannot read: it lives in a mode-0600 file and in the process's settings), requests that a browser
marks as coming from another origin are refused, and on a loopback address the Host header must name
the endpoint itself.

Two credentials, one scheme: the operator's token opens everything (SQL, health, Faust's pages, the
review page); a reviewer's token opens the review and trends pages and their API, nothing else.

Who a request labels as is the server's decision, never the client's: the reviewer name is bound to the
credential. With the shared tokens every caller is the reviewer the server is configured with
(``EMOSTREAM_REVIEWER``: a single-person setup); a named reviewer's personal token
(``emostream.stream.web.reviewers``, added by the operator) is bound to that reviewer's name and role. A
browser session records the name when the server issues it (signed, so the client cannot change it), and
a cookie whose name is not its credential's any more, or whose personal token was revoked, opens nothing.
``?reviewer=`` on the sign-in URL and an ``X-Reviewer`` header are ignored: neither can choose or change
the name.

What each may open: the operator's token everything; a reviewer's (shared or personal) the review and
trends pages and their API, but not the operator's reviewer list (``ADMIN_PATHS``); the team page and the
adjudication API (``ADJUDICATOR_PATHS``) need the operator or a reviewer with the adjudicator role.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from emostream.stream.web.reviewers import ReviewerDirectory
from emostream.stream.web.sessions import Session, SessionCodec, SessionError, cookie_name

TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 16
PLACEHOLDERS = ("change-me", "changeme", "replace-me")


def strong_token(value: SecretStr | None) -> SecretStr | None:
    """A configured credential must be one nobody can guess: no placeholder, no short word."""
    if value is None:
        return None
    token = value.get_secret_value()
    if len(token.strip()) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"must be at least {MIN_TOKEN_CHARS} characters (e.g. python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'), or unset for a random one per run"
        )
    if any(word in token.lower() for word in PLACEHOLDERS):
        raise ValueError("is still a placeholder from .env.example: set a random value")
    return value


# A configured token, checked for strength when the settings are read; None: a random one per run.
Credential = Annotated[SecretStr | None, AfterValidator(strong_token)]


def default_reviewer() -> str:
    """The name of the user running the server: a sensible label on a one-person machine."""
    import getpass

    try:
        return getpass.getuser()[:64] or "reviewer"
    except (KeyError, OSError):
        return "reviewer"


class WebConfig(BaseModel):
    """Where an endpoint listens, the credentials it asks for, and who the shared tokens label as."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    web_host: str = Field("127.0.0.1", description="host of the worker's web endpoint")
    web_port: int = Field(0, ge=0, description="port of the worker's web endpoint; 0: a free one")
    web_token: Credential = Field(
        None,
        description="credential every request to the web endpoint must carry (Authorization: Bearer); "
        "unset: a random one per run, written beside the endpoint file with mode 0600",
    )
    review_token: Credential = Field(
        None,
        description="credential of the review and trends pages (and their API), for reviewers; it opens "
        "nothing else. Unset: a random one per run, printed in the page's URL",
    )
    reviewer: str = Field(
        default_factory=default_reviewer,
        min_length=1,
        max_length=64,
        description="the reviewer name every session and program of the shared review and operator tokens "
        "labels as; bound by the server, no request can change it",
    )
    session_hours: float = Field(12.0, gt=0, description="hours a review page session (its cookie) lasts")

    def tokens(self) -> tuple[str, str]:
        """The operator's and the reviewers' tokens: the configured ones, else a random one each per run."""
        admin = self.web_token.get_secret_value() if self.web_token else new_token()
        review = self.review_token.get_secret_value() if self.review_token else new_token()
        return admin, review


def new_token() -> str:
    """A random credential for one run: 32 random bytes, URL-safe base64 (43 characters)."""
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
    """The token a running endpoint wrote, stripped; None when the file is missing, unreadable or empty."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def token_file(endpoint_file: Path) -> Path:
    """Beside the endpoint file: ``clickhouse.endpoint.json`` -> ``clickhouse.endpoint.token``."""
    return endpoint_file.with_suffix(".token")


ADMIN = "admin"  # the operator's credential (EMOSTREAM_WEB_TOKEN): every route
REVIEW = "review"  # a reviewer's credential (EMOSTREAM_REVIEW_TOKEN): the review and trends pages only
REVIEWER_PATHS = ("/review", "/trends")
ADMIN_PATHS = ("/review/api/reviewers", "/review/api/gold")  # under /review, but the operator's alone
ADJUDICATOR_PATHS = ("/review/team", "/review/api/team", "/review/api/disagreements", "/review/api/settle")
PAGES = frozenset({"/review", "/trends", "/review/team"})  # what a browser opens, with ?token= the first time
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the credential's scope, and the browser session if it came with one."""

    scope: str
    reviewer: str  # bound by the server to the credential (see the module's docstring)
    session: Session | None = None
    role: str = ""  # a named reviewer's role ("reviewer", "adjudicator"); "" for the shared tokens

    @property
    def adjudicates(self) -> bool:
        """Whether the caller may see disputed items' opinions and settle them: the operator, or an adjudicator."""
        return self.scope == ADMIN or self.role == "adjudicator"


@dataclass(frozen=True)
class Refusal:
    """A request the guard turns away: the HTTP status (401, 403) and the reason the caller is told."""

    status: int
    reason: str


@dataclass(frozen=True)
class Login:
    """A page opened with a valid ``?token=``: answer with a session cookie and the URL without the token."""

    scope: str
    reviewer: str
    location: str
    key: str = ""  # a named reviewer's token fingerprint, for the session cookie


class RequestGuard:
    """Decides, before any handler runs, who a request comes from and whether it may do what it asks.

    One scheme for every route: a credential, as ``Authorization: Bearer`` (programs) or as the session
    cookie a page load with ``?token=`` opened (browsers); state-changing requests made with the cookie
    need the session's CSRF token as well. The scope of the credential decides the routes.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | str,
        host: str,
        port: int,
        sessions: SessionCodec | None = None,
        reviewer: str = "reviewer",
    ) -> None:
        """``credentials``: scope -> token (a bare string: the operator's token alone); ``reviewer``: the
        name every caller of these credentials labels as."""
        tokens = {ADMIN: credentials} if isinstance(credentials, str) else dict(credentials)
        self._tokens = {scope: token.encode() for scope, token in tokens.items()}
        self.sessions = sessions
        self.cookie = cookie_name(port)
        self.reviewer = reviewer
        self.directory: ReviewerDirectory | None = None  # named reviewers; set where the review pages are mounted
        self._origins = {f"http://{name}:{port}" for name in _names_of(host)}
        self._hosts = {f"{name}:{port}" for name in _names_of(host)} if _is_loopback(host) else None

    def decide(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        cookies: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Principal | Refusal | Login:
        """Who the request comes from (a ``Principal``), a ``Login`` to answer with a cookie, or a ``Refusal``."""
        query = query or {}
        page_load = method == "GET" and path in PAGES
        refused = self._foreign(headers, navigation=page_load and headers.get("Sec-Fetch-Mode") == "navigate")
        if refused:
            return refused
        if page_load and "token" in query:
            principal = self._credential(query["token"])
            if principal is None or self.sessions is None:
                return Refusal(401, "the token in the URL is wrong (open the URL emostream printed)")
            # ?reviewer= is dropped, not obeyed: the name is the credential's
            rest = "&".join(f"{k}={quote(v)}" for k, v in query.items() if k not in ("token", "reviewer"))
            key = self._key_of(query["token"]) if principal.role else ""
            return Login(principal.scope, principal.reviewer, path + (f"?{rest}" if rest else ""), key)
        principal = self._bearer(headers) or self._session(cookies or {})
        if principal is None:
            return Refusal(401, "missing or wrong credential (Authorization: Bearer <token>)")
        if principal.session is not None and method in UNSAFE_METHODS:
            assert self.sessions is not None
            if not self.sessions.csrf_ok(principal.session, headers.get("X-CSRF-Token")):
                return Refusal(403, "missing or wrong X-CSRF-Token (reload the page)")
        if principal.scope != ADMIN and (not _under(path, REVIEWER_PATHS) or _under(path, ADMIN_PATHS)):
            return Refusal(403, f"the {principal.scope} credential does not open {path}")
        if _under(path, ADJUDICATOR_PATHS) and not principal.adjudicates:
            return Refusal(403, f"{path} is for adjudicators: ask the operator for the role")
        return principal

    def _foreign(self, headers: Mapping[str, str], navigation: bool) -> Refusal | None:
        """Requests another site makes the browser send. Opening a page from a link elsewhere is allowed
        (a GET changes nothing, and the session cookie is SameSite=Lax); anything else is not."""
        if self._hosts is not None and headers.get("Host") not in self._hosts:
            return Refusal(403, f"unexpected Host header {headers.get('Host')!r}")
        if navigation:
            return None
        origin = headers.get("Origin")
        # Same origin: one of the endpoint's own names, or the host the browser reached it by (behind a
        # port mapping or a proxy, e.g. http://review.internal:8080; on loopback the Host is pinned above).
        own = {f"{scheme}://{headers.get('Host')}" for scheme in ("http", "https")}
        if origin is not None and origin not in self._origins and origin not in own:
            return Refusal(403, f"requests from another origin ({origin}) are refused")
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return Refusal(403, "cross-site requests are refused")
        return None

    def reviewer_of(self, scope: str) -> str:
        """The reviewer name a credential labels as: the server's configured reviewer for the shared tokens."""
        return self.reviewer

    def _scope_of(self, token: str) -> str | None:
        for scope, expected in self._tokens.items():
            if hmac.compare_digest(token.strip().encode(), expected):
                return scope
        return None

    def _credential(self, token: str) -> Principal | None:
        """Who a token is: a shared token's scope and the server's reviewer, or a live named reviewer."""
        scope = self._scope_of(token)
        if scope is not None:
            return Principal(scope, self.reviewer_of(scope))
        named = self.directory.by_token(token) if self.directory is not None and REVIEW in self._tokens else None
        return Principal(REVIEW, named.name, role=named.role) if named else None

    def _key_of(self, token: str) -> str:
        named = self.directory.by_token(token) if self.directory is not None else None
        return named.fingerprint if named else ""

    def _bearer(self, headers: Mapping[str, str]) -> Principal | None:
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self._credential(given)  # X-Reviewer: not read

    def _session(self, cookies: Mapping[str, str]) -> Principal | None:
        value = cookies.get(self.cookie)
        session = self.sessions.read(value) if value and self.sessions else None
        if session is None or session.scope not in self._tokens:
            return None
        if session.key:  # a named reviewer's: only while that token is their live one
            named = self.directory.live(session.reviewer, session.key) if self.directory is not None else None
            if named is None or session.scope != REVIEW:
                return None
            return Principal(REVIEW, named.name, session, named.role)
        if session.reviewer != self.reviewer_of(session.scope):  # issued under another name: sign in again
            return None
        return Principal(session.scope, session.reviewer, session)

    def session_cookie(self, scope: str, reviewer: str | None = None, key: str = "") -> tuple[str, dict[str, Any]]:
        """A fresh session cookie's value and attributes (HttpOnly, SameSite=Lax, path /, max age), for the
        reviewer the sign-in's credential is bound to: a named reviewer with their token's fingerprint
        ``key``, else the reviewer of the shared token of ``scope``."""
        assert self.sessions is not None
        value, _ = self.sessions.issue(scope, reviewer if key and reviewer else self.reviewer_of(scope), key)
        return value, {"httponly": True, "samesite": "Lax", "path": "/", "max_age": int(self.sessions.max_age)}

    def middleware(self) -> Callable[..., Awaitable[Any]]:
        """An aiohttp middleware that applies the guard to every route, Faust's own pages included.

        The handler finds the caller in ``request["principal"]``.
        """
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
            if self.directory is not None:
                await self.directory.refresh()  # at most max_age old: a revocation holds from the next request
            decided = self.decide(request.method, request.path, request.headers, request.cookies, request.query)
            if isinstance(decided, Login):
                try:
                    value, attributes = self.session_cookie(decided.scope, decided.reviewer, decided.key)
                except SessionError as exc:
                    return web.json_response({"error": str(exc)}, status=400)
                response = web.HTTPSeeOther(decided.location)
                response.set_cookie(self.cookie, value, **attributes)
                response.headers["Referrer-Policy"] = "no-referrer"  # the token must not travel on
                return response
            if isinstance(decided, Refusal):
                if request.method == "GET" and request.path in PAGES:
                    return web.Response(
                        text=UNAUTHORIZED_PAGE.format(reason=html.escape(decided.reason)),
                        status=decided.status,
                        content_type="text/html",
                    )
                headers = {"WWW-Authenticate": 'Bearer realm="emostream"'} if decided.status == 401 else None
                return web.json_response({"error": decided.reason}, status=decided.status, headers=headers)
            request["principal"] = decided
            return await handler(request)

        return guard


UNAUTHORIZED_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>emostream: sign-in needed</title>
<style>body{{font:16px system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}}
code{{background:#eee;padding:0 .3em}}</style>
</head><body><h1>Sign-in needed</h1><p>{reason}.</p>
<p>Open the page with the URL that <code>emostream up</code> or <code>emostream review</code> printed: it carries
the token (<code>?token=...</code>), and your browser keeps a session after that.</p></body></html>
"""


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def guard_for(web: WebConfig, port: int, credentials: dict[str, str]) -> RequestGuard:
    """The guard of an endpoint on ``web.web_host:port`` with these credentials (scope -> token)."""
    sessions = SessionCodec(credentials, max_age=web.session_hours * 3600)
    return RequestGuard(credentials, web.web_host, port, sessions, reviewer=web.reviewer)


def _names_of(host: str) -> set[str]:
    return {host, "localhost", "127.0.0.1", "[::1]"} if _is_loopback(host) else {host}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
