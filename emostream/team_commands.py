"""`emostream reviewers`: the operator adds, lists and revokes named reviewers; `emostream review gold`
loads gold questions.

Where the list lives is ClickHouse's ``review_reviewers`` (``emostream.stream.web.reviewers``). In the
embedded mode the running `up` owns the chDB directory, so the commands go through its operator-only
API (``/review/api/reviewers``, with the token it wrote beside the directory), which also makes a
revocation hold from that server's next request. Otherwise (no `up` running, or ClickHouse is a server)
they write the table on the writer's DSN, and every review server sees the change within a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emostream.cli_common import Dsn, Home, Registry, UsageError, app, settings_from
from emostream.console import err, literal, out, table
from emostream.settings import Settings
from emostream.streaming_commands import review_app

reviewers_app = typer.Typer(add_completion=False, no_args_is_help=True)
app.add_typer(reviewers_app, name="reviewers", help="Named reviewers: add, list, revoke (the operator's).")


def _endpoint(settings: Settings) -> Any:
    """The running `up` that owns the embedded chDB directory, or None (then the table is written directly)."""
    from emostream.stream.web.endpoint import Endpoint

    directory = settings.clickhouse().directory
    return Endpoint.find(directory) if directory else None


def _call(endpoint: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The running `up`'s answer; its refusal (a name in use, no such reviewer) is a UsageError."""
    from emostream.stream.clickhouse.sql import SqlError

    try:
        return endpoint.api(method, path, body)
    except SqlError as exc:
        raise UsageError(str(exc)) from None


def _store(settings: Settings) -> Any:
    from emostream.stream.clickhouse.ddl import apply_schema
    from emostream.stream.web.reviewers import ReviewerStore

    store = ReviewerStore(settings.clickhouse())
    apply_schema(store.client)
    return store


@reviewers_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="the name their labels carry (1-64 printable characters)")],
    adjudicator: Annotated[
        bool, typer.Option("--adjudicator", help="may also settle disputed items and see the team page")
    ] = False,
    clickhouse_dsn: Dsn = None,
    home: Home = None,
) -> None:
    """Add a reviewer and print their personal token and link (shown this once: only its hash is kept)."""
    settings = settings_from(locals())
    role = "adjudicator" if adjudicator else "reviewer"
    if name.strip() == settings.reviewer:
        raise UsageError(f"{name!r} is the shared review token's name (EMOSTREAM_REVIEWER): choose another")
    endpoint = _endpoint(settings)
    if endpoint is not None:
        answer = _call(endpoint, "POST", "/review/api/reviewers", {"name": name, "role": role})
        token, link = answer["token"], answer["url"]
    else:
        store = _store(settings)
        try:
            _, token = store.add(name, role)
        finally:
            store.close()
        link = f"<review page URL>/review?token={token}"
    err.print(literal(f"added {name.strip()!r} ({role}). Their link (shown once, keep it private):"))
    out.print(literal(link), soft_wrap=True)
    if endpoint is None:
        err.print(literal(f"token: {token}  (the review page's address + /review?token=...)"))


@reviewers_app.command("list")
def list_reviewers(clickhouse_dsn: Dsn = None, home: Home = None) -> None:
    """Every named reviewer: role, when their token was issued, and whether it is revoked."""
    settings = settings_from(locals())
    endpoint = _endpoint(settings)
    if endpoint is not None:
        rows = _call(endpoint, "GET", "/review/api/reviewers")["reviewers"]
    else:
        store = _store(settings)
        try:
            rows = [r.as_json() for r in store.reviewers()]
        finally:
            store.close()
    out.print(
        table(
            f"{len(rows)} named reviewers",
            ["name", "role", "token issued", "state"],
            [[r["name"], r["role"], r["added_at"], "revoked" if r["revoked"] else "active"] for r in rows],
        )
    )


@reviewers_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="the reviewer to shut out")],
    clickhouse_dsn: Dsn = None,
    home: Home = None,
) -> None:
    """Revoke a reviewer: their token and every session opened with it stop working. Their labels stay."""
    settings = settings_from(locals())
    endpoint = _endpoint(settings)
    if endpoint is not None:
        _call(endpoint, "POST", "/review/api/reviewers/revoke", {"name": name})
    else:
        store = _store(settings)
        try:
            store.revoke(name)
        finally:
            store.close()
    err.print(literal(f"revoked {name.strip()!r}: their token and sessions no longer open anything"))


@review_app.command("gold")
def gold(
    file: Annotated[Path, typer.Argument(help="CSV/TSV with text and label columns (id or tweet_id, brand optional)")],
    registry: Registry = None,
    clickhouse_dsn: Dsn = None,
    home: Home = None,
) -> None:
    """Load gold questions: tweets with known labels, mixed into every reviewer's queue at
    EMOSTREAM_REVIEW_GOLD_RATE and looking like any item (the current model scores their texts now). Each
    reviewer's accuracy on them is on the team page, and retraining weighs their labels by it."""
    from emostream.model.config import RuntimeConfig
    from emostream.model.registry import ModelRegistry
    from emostream.model.runtime import load_runtime
    from emostream.stream.review.gold import GoldError, gold_rows, read_gold

    settings = settings_from(locals())
    try:
        questions = read_gold(file)
    except GoldError as exc:
        raise UsageError(str(exc)) from None
    runtime = load_runtime(settings.piece(RuntimeConfig), ModelRegistry(settings.registry).require_current().path)
    scores = runtime.predict_proba([q.text for q in questions]).tolist()
    endpoint = _endpoint(settings)
    if endpoint is not None:
        body = {
            "model_version": runtime.version,
            "threshold": settings.review_threshold,
            "questions": [
                {"tweet_id": q.tweet_id, "text": q.text, "label": q.label, "brand": q.brand, "probabilities": p}
                for q, p in zip(questions, scores, strict=True)
            ],
        }
        added = int(_call(endpoint, "POST", "/review/api/gold", body)["added"])
    else:
        from emostream.stream.clickhouse.ddl import apply_schema
        from emostream.stream.review.queue import ReviewQueue

        queue = ReviewQueue(settings.clickhouse())
        try:
            apply_schema(queue.client)
            added = queue.add_gold(gold_rows(questions, scores, runtime.version, settings.review_threshold))
        finally:
            queue.close()
    err.print(literal(f"{added:,} gold questions loaded from {file} (scored by {runtime.version})"))
