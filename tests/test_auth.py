"""The endpoint's request guard: unit tests of each rule, without a server."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path

import pytest

from emostream.stream.web.auth import (
    ADMIN,
    REVIEW,
    Login,
    Principal,
    Refusal,
    RequestGuard,
    new_token,
    read_token,
    write_token,
)
from emostream.stream.web.reviewers import ReviewerDirectory
from emostream.stream.web.sessions import SessionCodec, SessionError, check_reviewer

TOKEN = "t0ken-value"


def headers(**extra: str) -> dict[str, str]:
    return {"Host": "127.0.0.1:8123", "Authorization": f"Bearer {TOKEN}", **extra}


def refusal(guard: RequestGuard, headers: dict[str, str]) -> tuple[int, str] | None:
    """What the guard says to a program's request (a bearer token, no cookie) for the SQL endpoint."""
    decided = guard.decide("POST", "/sql", headers)
    return (decided.status, decided.reason) if isinstance(decided, Refusal) else None


def test_the_token_passes_and_everything_else_is_refused() -> None:
    guard = RequestGuard(TOKEN, "127.0.0.1", 8123)
    assert refusal(guard, headers()) is None
    assert refusal(guard, headers(Host="localhost:8123", Origin="http://localhost:8123")) is None
    assert refusal(guard, {"Host": "127.0.0.1:8123"}) == (
        401,
        "missing or wrong credential (Authorization: Bearer <token>)",
    )
    assert refusal(guard, headers(Authorization="Bearer wrong"))[0] == 401  # type: ignore[index]
    assert refusal(guard, headers(Authorization=TOKEN))[0] == 401  # type: ignore[index]  # no scheme
    assert refusal(guard, headers(Authorization=f"Basic {TOKEN}"))[0] == 401  # type: ignore[index]
    assert refusal(guard, headers(Origin="http://evil.example"))[0] == 403  # type: ignore[index]
    assert refusal(guard, headers(Origin="http://127.0.0.1:9999"))[0] == 403  # type: ignore[index]  # other port
    assert refusal(guard, headers(**{"Sec-Fetch-Site": "cross-site"}))[0] == 403  # type: ignore[index]
    assert refusal(guard, headers(Host="rebound.evil.example:8123"))[0] == 403  # type: ignore[index]  # DNS rebinding


def test_a_non_loopback_endpoint_does_not_pin_the_host_header() -> None:
    guard = RequestGuard(TOKEN, "0.0.0.0", 6066)  # in a container, reached as worker:6066
    assert refusal(guard, headers(Host="worker:6066")) is None
    assert refusal(guard, {"Host": "worker:6066"})[0] == 401  # type: ignore[index]


def test_the_token_file_is_private_from_the_start(tmp_path: Path) -> None:
    token = new_token()
    assert len(token) >= 40 and token != new_token()
    path = tmp_path / "x.endpoint.token"
    write_token(path, token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token(path) == token
    assert read_token(tmp_path / "missing") is None


REVIEW_TOKEN = "review-t0ken"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def guard_with_sessions(clock: Clock | None = None) -> RequestGuard:
    credentials = {ADMIN: TOKEN, REVIEW: REVIEW_TOKEN}
    codec = SessionCodec(credentials, max_age=3600, clock=clock or Clock())
    return RequestGuard(credentials, "127.0.0.1", 8123, codec, reviewer="ana")


def test_a_page_opened_with_the_token_logs_in_and_drops_the_token_from_the_url() -> None:
    guard = guard_with_sessions()
    host = {"Host": "127.0.0.1:8123"}
    login = guard.decide("GET", "/review", host, query={"token": REVIEW_TOKEN, "brand": "acme & co"})
    assert login == Login(REVIEW, "ana", "/review?brand=acme%20%26%20co")
    # ?reviewer= cannot name the session: the credential's reviewer it is, and the parameter is dropped
    named = guard.decide("GET", "/review", host, query={"token": REVIEW_TOKEN, "reviewer": "bo"})
    assert isinstance(named, Login) and named.reviewer == "ana" and named.location == "/review"
    assert guard.decide("GET", "/review", host, query={"token": "wrong"}) == Refusal(
        401, "the token in the URL is wrong (open the URL emostream printed)"
    )
    assert guard.decide("GET", "/review", host).status == 401  # type: ignore[union-attr]  # no token, no cookie
    # ?token= is only for pages: an API call must carry a credential the usual way
    assert guard.decide("GET", "/review/api/items", host, query={"token": REVIEW_TOKEN}).status == 401  # type: ignore[union-attr]


def test_a_session_cookie_opens_its_scope_and_state_changes_need_the_csrf_token() -> None:
    clock = Clock()
    guard = guard_with_sessions(clock)
    assert guard.sessions is not None
    value, attributes = guard.session_cookie(REVIEW)
    assert attributes["httponly"] and attributes["samesite"] == "Lax"
    cookies = {guard.cookie: value}
    host = {"Host": "127.0.0.1:8123"}
    principal = guard.decide("GET", "/review/api/items", host, cookies)
    assert isinstance(principal, Principal) and principal.reviewer == "ana" and principal.session is not None
    csrf = guard.sessions.csrf_token(principal.session)
    assert guard.decide("POST", "/review/api/label", host, cookies) == Refusal(
        403, "missing or wrong X-CSRF-Token (reload the page)"
    )
    tampered = csrf[:-1] + ("1" if csrf.endswith("0") else "0")  # one character off (never the token itself)
    assert guard.decide("POST", "/review/api/label", {**host, "X-CSRF-Token": tampered}, cookies).status == 403  # type: ignore[union-attr]
    assert isinstance(guard.decide("POST", "/review/api/label", {**host, "X-CSRF-Token": csrf}, cookies), Principal)
    # a reviewer's session opens the review and trends pages, nothing else
    assert isinstance(guard.decide("GET", "/trends/api", host, cookies), Principal)
    assert guard.decide("POST", "/sql", {**host, "X-CSRF-Token": csrf}, cookies) == Refusal(
        403, "the review credential does not open /sql"
    )
    assert guard.decide("GET", "/", host, cookies).status == 403  # type: ignore[union-attr]  # Faust's pages
    assert guard.decide("GET", "/reviewer-secrets", host, cookies).status == 403  # type: ignore[union-attr]
    # the review token as a bearer: the same scope
    bearer = {**host, "Authorization": f"Bearer {REVIEW_TOKEN}"}
    assert isinstance(guard.decide("POST", "/review/api/label", bearer), Principal)  # programs: no CSRF
    assert guard.decide("POST", "/sql", bearer).status == 403  # type: ignore[union-attr]
    # tampered, foreign-scope or expired cookies open nothing
    payload, _, signature = value.partition(".")
    tampered = ("1" if signature.startswith("0") else "0") + signature[1:]  # one character off, always
    assert guard.decide("GET", "/review/api/items", host, {guard.cookie: f"{payload}.{tampered}"}).status == 401  # type: ignore[union-attr]
    other = SessionCodec({REVIEW: "another-token"}, max_age=3600, clock=clock).issue(REVIEW, "eve")[0]
    assert guard.decide("GET", "/review/api/items", host, {guard.cookie: other}).status == 401  # type: ignore[union-attr]
    clock.now += 3601
    assert guard.decide("GET", "/review/api/items", host, cookies).status == 401  # type: ignore[union-attr]


def test_only_a_page_load_may_come_from_another_site() -> None:
    guard = guard_with_sessions()
    value, _ = guard.session_cookie(REVIEW)
    cookies = {guard.cookie: value}
    link = {"Host": "127.0.0.1:8123", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert isinstance(guard.decide("GET", "/review", link, cookies), Principal)  # a link from a chat, say
    assert guard.decide("GET", "/review/api/items", {**link, "Sec-Fetch-Mode": "cors"}, cookies).status == 403  # type: ignore[union-attr]
    assert guard.decide("POST", "/review/api/label", link, cookies).status == 403  # type: ignore[union-attr]
    evil = {"Host": "127.0.0.1:8123", "Origin": "http://evil.example"}
    assert guard.decide("POST", "/review/api/label", evil, cookies).status == 403  # type: ignore[union-attr]
    rebound = {**link, "Host": "evil.example:8123"}  # DNS rebinding, even for a page load
    assert guard.decide("GET", "/review", rebound, cookies).status == 403  # type: ignore[union-attr]


def test_behind_a_port_mapping_the_origin_is_the_host_the_browser_used() -> None:
    guard = RequestGuard({REVIEW: REVIEW_TOKEN}, "0.0.0.0", 8080, SessionCodec({REVIEW: REVIEW_TOKEN}, 3600), "ana")
    value, _ = guard.session_cookie(REVIEW)
    assert guard.sessions is not None
    csrf = guard.sessions.csrf_token(guard.sessions.read(value))  # type: ignore[arg-type]
    same = {"Host": "review.internal:9000", "Origin": "http://review.internal:9000", "X-CSRF-Token": csrf}
    assert isinstance(guard.decide("POST", "/review/api/label", same, {guard.cookie: value}), Principal)
    other = {**same, "Origin": "http://evil.example"}
    assert guard.decide("POST", "/review/api/label", other, {guard.cookie: value}).status == 403  # type: ignore[union-attr]


def test_the_reviewer_is_the_credentials_whatever_the_request_says() -> None:
    """With the shared tokens every caller is the server's reviewer: a header, a query parameter or a
    cookie issued under another name cannot make a request label as someone else."""
    clock = Clock()
    guard = guard_with_sessions(clock)
    assert guard.sessions is not None
    host = {"Host": "127.0.0.1:8123"}
    for claim in ({"X-Reviewer": "alice"}, {"X-Reviewer": "ana"}, {}):
        bearer = guard.decide("POST", "/review/api/undo", {**host, "Authorization": f"Bearer {REVIEW_TOKEN}", **claim})
        assert isinstance(bearer, Principal) and bearer.reviewer == "ana" and bearer.session is None
    admin = guard.decide("GET", "/review/api/items", {**host, "Authorization": f"Bearer {TOKEN}", "X-Reviewer": "x"})
    assert isinstance(admin, Principal) and admin.reviewer == "ana"
    value, _ = guard.session_cookie(REVIEW)
    principal = guard.decide(
        "GET", "/review/api/items", {**host, "X-Reviewer": "alice"}, {guard.cookie: value}, {"reviewer": "alice"}
    )
    assert isinstance(principal, Principal) and principal.reviewer == "ana"
    # a genuine cookie (signed with the right key) that names another reviewer: an older server's, or one
    # issued before the reviewer was renamed in the settings; it opens nothing
    other, session = guard.sessions.issue(REVIEW, "alice")
    assert guard.sessions.read(other) == session
    assert guard.decide("GET", "/review/api/items", host, {guard.cookie: other}) == Refusal(
        401, "missing or wrong credential (Authorization: Bearer <token>)"
    )
    renamed = RequestGuard({ADMIN: TOKEN, REVIEW: REVIEW_TOKEN}, "127.0.0.1", 8123, guard.sessions, reviewer="bo")
    assert renamed.decide("GET", "/review/api/items", host, {guard.cookie: value}).status == 401  # type: ignore[union-attr]
    # and a cookie's name cannot be edited: the signature covers it
    payload, _, signature = value.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["r"] = "alice"
    forged = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")
    assert guard.decide("GET", "/review/api/items", host, {guard.cookie: f"{forged}.{signature}"}).status == 401  # type: ignore[union-attr]


def test_reviewer_names_are_checked() -> None:
    assert check_reviewer("  Ana María ") == "Ana María"
    for bad, problem in (("  ", "must not be blank"), ("x" * 65, "at most 64"), ("a\nb", "control characters")):
        with pytest.raises(SessionError, match=problem):
            check_reviewer(bad)


# --- named reviewers: personal tokens, their sessions, revocation, roles ------------------------------------------


class FakeStore:
    """The reviewer table as ``ReviewerStore.reviewers`` reads it; ``fail`` makes the read raise (ClickHouse down)."""

    def __init__(self) -> None:
        self.rows: list = []
        self.fail = False

    def reviewers(self) -> list:
        if self.fail:
            raise ConnectionError("ClickHouse is down")
        return list(self.rows)

    def close(self) -> None:
        pass


def named_guard() -> tuple[RequestGuard, FakeStore, ReviewerDirectory, dict[str, str]]:
    from datetime import UTC, datetime

    from emostream.stream.web.reviewers import Reviewer, token_sha256

    store = FakeStore()
    tokens = {"kim": new_token(), "ada": new_token()}
    now = datetime(2026, 12, 1, tzinfo=UTC)
    store.rows = [
        Reviewer("kim", "reviewer", token_sha256(tokens["kim"]), now, False, now),
        Reviewer("ada", "adjudicator", token_sha256(tokens["ada"]), now, False, now),
    ]
    directory = ReviewerDirectory(store, max_age=0)  # type: ignore[arg-type]  # re-read at every request
    guard = guard_with_sessions()
    guard.directory = directory
    asyncio.run(directory.refresh())
    return guard, store, directory, tokens


def test_a_personal_token_is_its_reviewers_name_and_role_whatever_the_request_says() -> None:
    guard, _, _, tokens = named_guard()
    host = {"Host": "127.0.0.1:8123"}
    kim = guard.decide(
        "GET", "/review/api/items", {**host, "Authorization": f"Bearer {tokens['kim']}", "X-Reviewer": "ada"}
    )
    assert isinstance(kim, Principal) and (kim.scope, kim.reviewer, kim.role) == (REVIEW, "kim", "reviewer")
    assert not kim.adjudicates
    login = guard.decide("GET", "/review", host, query={"token": tokens["kim"], "reviewer": "ana"})
    assert isinstance(login, Login) and login.reviewer == "kim" and login.key and login.location == "/review"
    value, _ = guard.session_cookie(login.scope, login.reviewer, login.key)
    session = guard.decide("GET", "/review/api/items", host, {guard.cookie: value})
    assert isinstance(session, Principal) and session.reviewer == "kim" and session.session is not None
    # what a named reviewer may not open: the operator's routes, and the adjudicators'
    bearer = {**host, "Authorization": f"Bearer {tokens['kim']}"}
    for path in ("/review/api/reviewers", "/review/api/gold", "/sql"):
        assert guard.decide("POST", path, bearer).status == 403, path  # type: ignore[union-attr]
    for path in ("/review/team", "/review/api/team", "/review/api/disagreements", "/review/api/settle"):
        assert guard.decide("GET", path, bearer).status == 403, path  # type: ignore[union-attr]
        ada = guard.decide("GET", path, {**host, "Authorization": f"Bearer {tokens['ada']}"})
        assert isinstance(ada, Principal) and ada.adjudicates, path
        admin = guard.decide("GET", path, headers())
        assert isinstance(admin, Principal) and admin.adjudicates
    assert guard.decide("GET", "/review/api/reviewers", headers()).scope == ADMIN  # type: ignore[union-attr]
    # the shared review token is not an adjudicator
    assert guard.decide("GET", "/review/team", {**host, "Authorization": f"Bearer {REVIEW_TOKEN}"}).status == 403  # type: ignore[union-attr]


def test_revoking_or_reissuing_ends_the_sessions_and_an_unreadable_list_trusts_no_personal_token() -> None:
    from dataclasses import replace

    from emostream.stream.web.reviewers import token_sha256

    guard, store, directory, tokens = named_guard()
    host = {"Host": "127.0.0.1:8123"}
    login = guard.decide("GET", "/review", host, query={"token": tokens["kim"]})
    assert isinstance(login, Login)
    cookie = {guard.cookie: guard.session_cookie(login.scope, login.reviewer, login.key)[0]}
    assert isinstance(guard.decide("GET", "/review/api/items", host, cookie), Principal)
    forged = {guard.cookie: guard.session_cookie(REVIEW, "kim", "0" * 16)[0]}  # a signed cookie, another token
    assert guard.decide("GET", "/review/api/items", host, forged).status == 401  # type: ignore[union-attr]
    store.rows[0] = replace(store.rows[0], revoked=True)
    asyncio.run(directory.refresh())
    assert guard.decide("GET", "/review/api/items", host, cookie).status == 401  # type: ignore[union-attr]
    assert guard.decide("GET", "/review/api/items", {**host, "Authorization": f"Bearer {tokens['kim']}"}).status == 401  # type: ignore[union-attr]
    fresh = new_token()  # kim back with a new token: the old token and its sessions stay dead
    store.rows[0] = replace(store.rows[0], revoked=False, token_sha256=token_sha256(fresh))
    asyncio.run(directory.refresh())
    assert guard.decide("GET", "/review/api/items", host, cookie).status == 401  # type: ignore[union-attr]
    assert isinstance(guard.decide("GET", "/review/api/items", {**host, "Authorization": f"Bearer {fresh}"}), Principal)
    store.fail = True
    asyncio.run(directory.refresh())
    assert guard.decide("GET", "/review/api/items", {**host, "Authorization": f"Bearer {fresh}"}).status == 401  # type: ignore[union-attr]
    shared = guard.decide("GET", "/review/api/items", {**host, "Authorization": f"Bearer {REVIEW_TOKEN}"})
    assert isinstance(shared, Principal) and shared.reviewer == "ana"  # the shared token keeps working


def test_the_directory_reads_the_table_at_most_once_per_max_age() -> None:
    store = FakeStore()
    calls = []
    reviewers = store.reviewers

    def counted() -> list:
        calls.append(1)
        return reviewers()

    store.reviewers = counted  # type: ignore[method-assign]
    clock = Clock()
    directory = ReviewerDirectory(store, max_age=1.0, clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        asyncio.run(directory.refresh())
    assert len(calls) == 1
    clock.now += 1.0
    asyncio.run(directory.refresh())
    directory.invalidate()
    asyncio.run(directory.refresh())
    assert len(calls) == 3
