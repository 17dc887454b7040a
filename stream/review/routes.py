"""The review and trends pages and their JSON API, as aiohttp routes on any aiohttp application.

``emostream up`` mounts them on the worker's web server (Faust's aiohttp application), ``emostream
review`` on one of its own: one code path. The guard (``emostream.stream.web.auth``) has already decided who the
caller is; handlers find it in ``request["principal"]``, whose reviewer name the server bound to the
credential: no route takes a name from the request (there is no rename). Every asset is served from
``static/``: the pages work with no internet.

Request bodies are validated before anything is stored: a tweet id is a ``emostream.schemas.messages.TweetId`` (at
most 512 characters, so a 512 KB id is refused with 400), and a label, an undo or a skip names the item
by its id and ``text_sha256``, the hash of the text the page showed (64 hex digits).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from emostream.schemas import LABELS, NO_EMOTION, describe_errors
from emostream.schemas.messages import TweetId
from emostream.stream.clickhouse.trends import BUCKET_FUNCTIONS, TrendsError, parse_duration
from emostream.stream.review.http import GUARD, SERVICE, http_error, json_body, reviewer_checked
from emostream.stream.review.queue import TextSha256
from emostream.stream.review.service import ReviewError, ReviewService
from emostream.stream.review.team_routes import mount_team
from emostream.stream.web.auth import RequestGuard, WebConfig

STATIC = Path(__file__).resolve().parent / "static"
FIRST_WINDOW = 10  # items the page comes with: review.js's WINDOW
log = logging.getLogger("emostream.review")
PAGE_HEADERS = {
    # Scripts, styles and images from this origin only; never inside another site's frame (a framed
    # page could be made to receive the reviewer's key presses).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ItemRequest(BaseModel):
    """An item of the queue: the tweet id and the hash of the text that was shown with it."""

    tweet_id: TweetId
    text_sha256: TextSha256


class LabelRequest(ItemRequest):
    """An item and its label: one of ``LABELS`` or ``NO_EMOTION`` (anything else is refused with 400)."""

    label: str


def review_url(web: WebConfig, port: int, token: str) -> str:
    """The page's address; with the token in it when emostream made the token up (as Jupyter does).
    A token the user configured is theirs to hand out: it is not printed into logs."""
    host = "127.0.0.1" if web.web_host in ("0.0.0.0", "::") else web.web_host
    base = f"http://{host}:{port}/review"
    return f"{base} (token: EMOSTREAM_REVIEW_TOKEN)" if web.review_token else f"{base}?token={token}"


def mount_review(app: web.Application, service: ReviewService, guard: RequestGuard) -> None:
    """Add the pages, the API and the assets, and tie the service's start and stop to the app's."""
    app[SERVICE] = service
    app[GUARD] = guard
    guard.directory = service.reviewers  # personal tokens: the guard asks the service's reviewer directory
    app.on_response_prepare.append(_security_headers)

    async def start(_: web.Application) -> None:
        await service.start()

    async def stop(_: web.Application) -> None:
        await service.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/review", review_page)
    app.router.add_get("/trends", _page("trends.html"))
    app.router.add_static("/review/static", STATIC)
    app.router.add_get("/review/api/session", session)
    app.router.add_get("/review/api/items", items)
    app.router.add_post("/review/api/label", label)
    app.router.add_post("/review/api/undo", undo)
    app.router.add_post("/review/api/skip", skip)
    app.router.add_get("/trends/api", trends)
    app.router.add_get("/trends/chart.png", chart)
    mount_team(app)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(("/review", "/trends")):
        response.headers.update(PAGE_HEADERS)
        if "/api/" in request.path:
            response.headers["Cache-Control"] = "no-store"


def _page(name: str) -> Any:
    async def handler(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name)

    return handler


def _session_of(request: web.Request) -> dict[str, Any]:
    principal = request["principal"]
    guard = request.app[GUARD]
    csrf = guard.sessions.csrf_token(principal.session) if principal.session and guard.sessions else None
    return {
        "reviewer": principal.reviewer,
        "scope": principal.scope,
        "adjudicates": principal.adjudicates,  # the page links the team page for them
        "csrf": csrf,
        "labels": [*LABELS, NO_EMOTION],
        "lease_seconds": request.app[SERVICE].setup.review.review_lease,
    }


async def session(request: web.Request) -> web.Response:
    """GET /review/api/session: the caller's reviewer name, scope, CSRF token (sessions), labels and lease length."""
    return web.json_response(_session_of(request))


async def review_page(request: web.Request) -> web.Response:
    """The page with its session and first items in it, as a JSON block the script reads (never runs).

    Without them the page loaded empty and asked for both, so the first item came a few hundred ms after
    the page: a reviewer (or a script) acting at once found nothing to label. If the window cannot be
    had now (ClickHouse down), the page comes without it and asks, as before.
    """
    initial: dict[str, Any] = {"session": _session_of(request)}
    try:
        initial["window"] = await request.app[SERVICE].window(reviewer_checked(request), FIRST_WINDOW)
    except Exception:  # the page still loads; its script asks for the items and says what failed
        log.warning("the review page's first items could not be read", exc_info=True)
    # "<" escaped: no text in the data can close the script element or open a comment
    block = json.dumps(initial).replace("<", "\\u003c")
    page = (
        (STATIC / "review.html")
        .read_text()
        .replace("</head>", f'<script id="initial" type="application/json">{block}</script>\n</head>', 1)
    )
    return web.Response(text=page, content_type="text/html")


async def items(request: web.Request) -> web.Response:
    """GET /review/api/items: the caller's next window of ``n`` items (1 to 50), optionally of one brand and label."""
    query = request.query
    try:
        limit = int(query.get("n", "10"))
    except ValueError:
        raise http_error(400, f"n: must be a whole number, not {query.get('n')!r}") from None
    window = await request.app[SERVICE].window(
        reviewer_checked(request), limit, query.get("brand", ""), query.get("label", "")
    )
    return web.json_response(window)


async def label(request: web.Request) -> web.Response:
    """POST /review/api/label: save the caller's label of an item; 409 when the queue's rules refuse it."""
    body = await json_body(request, LabelRequest)
    try:
        saved = await request.app[SERVICE].label(reviewer_checked(request), body.tweet_id, body.text_sha256, body.label)
    except ValidationError as exc:
        raise http_error(400, describe_errors(exc)) from None
    except ReviewError as exc:
        raise http_error(exc.status, str(exc)) from None
    return web.json_response({"saved": True, "label": saved.model_dump(mode="json")})


async def undo(request: web.Request) -> web.Response:
    """POST /review/api/undo: withdraw the caller's own current label; returns the item, pending again."""
    body = await json_body(request, ItemRequest)
    try:
        item = await request.app[SERVICE].undo(reviewer_checked(request), body.tweet_id, body.text_sha256)
    except ReviewError as exc:
        raise http_error(exc.status, str(exc)) from None
    return web.json_response({"undone": True, "item": item.as_json()})


async def skip(request: web.Request) -> web.Response:
    """POST /review/api/skip: give the item up and keep it out of the caller's queue for ``SKIP_MEMORY`` seconds."""
    body = await json_body(request, ItemRequest)
    try:
        await request.app[SERVICE].skip(request["principal"], body.tweet_id, body.text_sha256)
    except ReviewError as exc:
        raise http_error(exc.status, str(exc)) from None
    return web.json_response({"skipped": True})


async def trends(request: web.Request) -> web.Response:
    """GET /trends/api: emotion shares per bucket (query: by, since, brand) and their spikes (k, window), as JSON."""
    service = request.app[SERVICE]
    by, seconds, brand = _trend_args(request)
    result = await service.trends(by, seconds, brand)
    try:
        k, window = float(request.query.get("k", "3")), int(request.query.get("window", "12"))
    except ValueError:
        raise http_error(400, "k and window: must be numbers") from None
    spikes = result.spikes(k=k, window=window) if not result.shares.empty else None
    return web.json_response(
        {
            "by": by,
            "brand": brand or "",
            "brands": await service.trend_brands(),
            "buckets": [str(bucket) for bucket in result.shares.index],
            "tweets": [int(n) for n in result.tweets],
            "shares": {name: [float(v) for v in result.shares[name]] for name in LABELS},
            "spikes": [] if spikes is None else _records(spikes),
        }
    )


def _records(spikes: Any) -> list[dict[str, Any]]:
    names = ("label", "share", "trailing_mean", "z")
    return [{"bucket": str(row.bucket), **{n: getattr(row, n) for n in names}} for row in spikes.itertuples()]


async def chart(request: web.Request) -> web.Response:
    """GET /trends/chart.png: the same shares drawn as a PNG; 404 when nothing was scored in the range."""
    service = request.app[SERVICE]
    by, seconds, brand = _trend_args(request)
    result = await service.trends(by, seconds, brand)
    if result.shares.empty:
        raise http_error(404, "no scored tweets in that range")
    title = f"Emotion shares per {by}, {f'brand {brand}' if brand else 'all brands'}"
    return web.Response(body=await service.chart(result, title), content_type="image/png")


def _trend_args(request: web.Request) -> tuple[Any, int, str | None]:
    by = request.query.get("by", "hour")
    if by not in BUCKET_FUNCTIONS:
        raise http_error(400, f"by: must be minute, hour or day, not {by!r}")
    try:
        seconds = parse_duration(request.query.get("since", "24h"))
    except TrendsError as exc:
        raise http_error(400, str(exc).replace("--since", "since")) from None
    return by, seconds, request.query.get("brand") or None
