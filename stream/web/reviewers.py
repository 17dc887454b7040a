"""Named reviewers: each with a personal token, added, listed and revoked by the operator.

Why personal tokens: with the one shared review token, everyone labels under the server's one name, so
nobody's accuracy or agreement can be measured and nobody can be shut out alone. A named reviewer's
token is bound to their name by the server (``emostream.stream.web.auth``): every label, undo and skip
they make carries that name, whatever the request says.

Kept in ClickHouse (``review_reviewers``, ``deploy/clickhouse/006_review_team.sql``), where every review
server of a deployment reads the same list, as the SHA-256 of each token: the token itself is shown
once, to the operator who added the reviewer, and a copy of the table gives nobody a credential.

Revocation ends a reviewer's sessions at once: a session cookie carries the fingerprint of the token it
was opened with, and the guard accepts it only while that token is the reviewer's live one. The
:class:`ReviewerDirectory` that the guard asks re-reads the table at most ``max_age`` seconds (1 s)
after its last look, before the request is decided, and a revocation made through the same server
takes effect on the next request. If the table cannot be read, personal credentials are refused (the
shared tokens keep working) rather than trusted from an old list that may hold a revoked reviewer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from emostream.schemas.messages import as_utc
from emostream.stream.clickhouse.client import open_client
from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.web.sessions import check_reviewer

Role = Literal["reviewer", "adjudicator"]
ROLES: tuple[Role, ...] = ("reviewer", "adjudicator")
TOKEN_BYTES = 32
FINGERPRINT_CHARS = 16  # of the token's SHA-256: what a session cookie carries to name its token
log = logging.getLogger("emostream.review")


class ReviewerError(ValueError):
    """A reviewer that cannot be added or revoked as asked, with why (a bad name or role)."""


class ReviewerExists(ReviewerError):
    """The name belongs to a reviewer who is not revoked."""


class UnknownReviewer(ReviewerError):
    """No reviewer of that name was ever added."""


def token_sha256(token: str) -> str:
    """The SHA-256 (hex) of a personal token: what ``review_reviewers`` keeps of it."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Reviewer:
    """A named reviewer as the latest row of ``review_reviewers`` says."""

    name: str
    role: Role
    token_sha256: str
    added_at: datetime
    revoked: bool
    changed_at: datetime  # of the row: a later change must sort after it

    @property
    def fingerprint(self) -> str:
        """The first characters of the token's hash: enough to tell one token of a name from the next."""
        return self.token_sha256[:FINGERPRINT_CHARS]

    def as_json(self) -> dict[str, Any]:
        """For the operator's list: name, role, when the token was issued, revoked or not (no hash)."""
        return {"name": self.name, "role": self.role, "added_at": self.added_at.isoformat(), "revoked": self.revoked}


class ReviewerStore:
    """``review_reviewers`` on a ClickHouse client of its own: read the list, add, revoke."""

    COLUMNS = ("name", "role", "token_sha256", "added_at", "revoked", "changed_at")
    LATEST = (
        "SELECT name, argMax(role, changed_at), argMax(token_sha256, changed_at), argMax(added_at, changed_at), "
        "argMax(revoked, changed_at), max(changed_at) FROM review_reviewers GROUP BY name ORDER BY name"
    )

    def __init__(self, dsn: ClickHouseDsn | str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = open_client(dsn)
        self._clock = clock

    def reviewers(self) -> list[Reviewer]:
        """Every reviewer ever added, revoked ones too, by name."""
        rows = self.client.query(self.LATEST).result_rows
        return [
            Reviewer(str(n), role, str(sha), as_utc(at), bool(revoked), as_utc(changed))
            for n, role, sha, at, revoked, changed in rows
        ]

    def add(self, name: str, role: Role = "reviewer") -> tuple[Reviewer, str]:
        """A new reviewer (or a revoked one back, with a new token); returns it and its token, shown once.

        Refused for a name in use by a reviewer who is not revoked: revoke first, which also ends the old
        token's sessions."""
        name = _checked_name(name)
        if role not in ROLES:
            raise ReviewerError(f"role: must be one of {', '.join(ROLES)}, not {role!r}")
        current = {r.name: r for r in self.reviewers()}.get(name)
        if current is not None and not current.revoked:
            raise ReviewerExists(f"{name!r} is a reviewer already; revoke them first to issue a new token")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._now(current)
        reviewer = Reviewer(name, role, token_sha256(token), now, revoked=False, changed_at=now)
        self._write(reviewer)
        return reviewer, token

    def revoke(self, name: str) -> Reviewer:
        """Revoke a reviewer: their token and every session opened with it stop working. Their labels stay."""
        name = _checked_name(name)
        current = {r.name: r for r in self.reviewers()}.get(name)
        if current is None:
            raise UnknownReviewer(f"{name!r} is not a reviewer")
        if current.revoked:
            return current
        revoked = replace(current, revoked=True, changed_at=self._now(current))
        self._write(revoked)
        return revoked

    def _now(self, current: Reviewer | None) -> datetime:
        """Now at the millisecond the column keeps, after the name's last change (the latest row must win)."""
        now = self._clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        return now if current is None else max(now, current.changed_at + timedelta(milliseconds=1))

    def _write(self, reviewer: Reviewer) -> None:
        row = [getattr(reviewer, name) for name in self.COLUMNS]
        self.client.insert("review_reviewers", [row], column_names=list(self.COLUMNS))

    def close(self) -> None:
        """Close the store's client."""
        self.client.close()


class ReviewerDirectory:
    """What the guard asks about personal credentials: a copy of the live reviewers, at most ``max_age`` old.

    :meth:`refresh` (awaited by the guard's middleware before each request is decided) re-reads the table
    on a thread of its own when the copy is older than ``max_age``; :meth:`by_token` and :meth:`live`
    answer from the copy, without I/O. A failed read empties the copy (see the module's docstring).
    """

    def __init__(self, store: ReviewerStore, max_age: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.max_age = max_age
        self._clock = clock
        self._by_hash: dict[str, Reviewer] = {}
        self._by_name: dict[str, Reviewer] = {}
        self._loaded_at = float("-inf")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="emostream-reviewers")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Re-read the reviewers if the copy is older than ``max_age`` (one read for concurrent callers)."""
        if self._clock() - self._loaded_at < self.max_age:
            return
        async with self._lock:
            if self._clock() - self._loaded_at < self.max_age:
                return
            try:
                found = await asyncio.get_running_loop().run_in_executor(self._thread, self.store.reviewers)
            except Exception:  # ClickHouse down, or shutting down: no personal credential is trusted meanwhile
                log.warning("the reviewers cannot be read; personal review tokens are refused until they can")
                self._set([])
                return
            self._set(found)

    def invalidate(self) -> None:
        """Forget when the copy was read: the next :meth:`refresh` reads the table (after an add or a revoke)."""
        self._loaded_at = float("-inf")

    def by_token(self, token: str) -> Reviewer | None:
        """The live reviewer whose token this is, or None (looked up by the token's hash: a lookup's timing
        tells nothing about a token, only about its hash)."""
        return self._by_hash.get(token_sha256(token))

    def live(self, name: str, fingerprint: str) -> Reviewer | None:
        """The reviewer, if ``name`` is live and ``fingerprint`` is their current token's (a session's check)."""
        reviewer = self._by_name.get(name)
        if reviewer is None or not hmac.compare_digest(reviewer.fingerprint, fingerprint):
            return None
        return reviewer

    def _set(self, reviewers: list[Reviewer]) -> None:
        live = [r for r in reviewers if not r.revoked]
        self._by_hash = {r.token_sha256: r for r in live}
        self._by_name = {r.name: r for r in live}
        self._loaded_at = self._clock()

    def close(self) -> None:
        """Stop the directory's thread and close its store."""
        self._thread.shutdown(wait=True)
        self.store.close()


def _checked_name(name: str) -> str:
    try:
        return check_reviewer(name)
    except ValueError as exc:
        raise ReviewerError(str(exc)) from None
