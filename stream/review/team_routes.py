"""The team's routes: the team page (agreement, disputed items), adjudication, and the operator's reviewers.

Who may call what is the guard's decision (``emostream.stream.web.auth``): the team page and the
adjudication API are for adjudicators and the operator (``ADJUDICATOR_PATHS``), the reviewer list for the
operator alone (``ADMIN_PATHS``); the service checks the adjudicator's role once more. Bodies are
validated before anything is stored, as on the review page's routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, field_validator

from emostream.schemas import LABELS, NO_EMOTION
from emostream.schemas.messages import TweetId
from emostream.stream.review.gold import GoldQuestion, gold_rows
from emostream.stream.review.http import GUARD, SERVICE, http_error, json_body, reviewer_checked
from emostream.stream.review.queue import TextSha256
from emostream.stream.review.service import ReviewError

STATIC = Path(__file__).resolve().parent / "static"


class SettleRequest(BaseModel):
    """A disputed item and the label an adjudicator settles it with."""

    tweet_id: TweetId
    text_sha256: TextSha256
    label: str

    @field_validator("label")
    @classmethod
    def known_label(cls, value: str) -> str:
        """One of the six labels or ``none``; anything else is refused (400)."""
        if value not in (*LABELS, NO_EMOTION):
            raise ValueError(f"must be one of {', '.join(LABELS)} or {NO_EMOTION}")
        return value


class AddReviewer(BaseModel):
    """A reviewer to add: their name (1-64 printable characters) and role."""

    name: str
    role: Literal["reviewer", "adjudicator"] = "reviewer"


class GoldUpload(BaseModel):
    """Gold questions with the model's scores of their texts (the operator's `emostream review gold` sends them)."""

    class Question(BaseModel):
        tweet_id: TweetId
        text: str = Field(min_length=1)
        label: str
        brand: str = Field("", max_length=256)
        probabilities: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=len(LABELS), max_length=len(LABELS))

        @field_validator("label")
        @classmethod
        def known_label(cls, value: str) -> str:
            """One of the six labels or ``none``."""
            if value not in (*LABELS, NO_EMOTION):
                raise ValueError(f"must be one of {', '.join(LABELS)} or {NO_EMOTION}")
            return value

    model_version: str = Field(min_length=1, max_length=256)
    threshold: float = Field(ge=0, le=1)
    questions: list[Question] = Field(min_length=1, max_length=100_000)


class NamedReviewer(BaseModel):
    """A reviewer by name (to revoke)."""

    name: str


def mount_team(app: web.Application) -> None:
    """Add the team page and its API to an application the review routes are mounted on."""
    app.router.add_get("/review/team", team_page)
    app.router.add_get("/review/api/team", team)
    app.router.add_get("/review/api/disagreements", disagreements)
    app.router.add_post("/review/api/settle", settle)
    app.router.add_get("/review/api/reviewers", reviewers)
    app.router.add_post("/review/api/reviewers", add_reviewer)
    app.router.add_post("/review/api/reviewers/revoke", revoke_reviewer)
    app.router.add_post("/review/api/gold", add_gold)


async def team_page(_: web.Request) -> web.FileResponse:
    """GET /review/team: agreement figures and the disputed items to settle (its script asks the API)."""
    return web.FileResponse(STATIC / "team.html")


async def team(request: web.Request) -> web.Response:
    """GET /review/api/team: agreement overall, per label, per reviewer and per pair; disputed counts."""
    return web.json_response(await request.app[SERVICE].team())


async def disagreements(request: web.Request) -> web.Response:
    """GET /review/api/disagreements?n=: disputed items, each with its opinions (who said what)."""
    try:
        limit = int(request.query.get("n", "50"))
    except ValueError:
        raise http_error(400, f"n: must be a whole number, not {request.query.get('n')!r}") from None
    found = await _service_call(request.app[SERVICE].disagreements(reviewer_checked(request), limit))
    return web.json_response({"items": [d.as_json() for d in found]})


async def settle(request: web.Request) -> web.Response:
    """POST /review/api/settle: settle a disputed item; 409 when it is not disputed."""
    body = await json_body(request, SettleRequest)
    replaced = await _service_call(
        request.app[SERVICE].settle(reviewer_checked(request), body.tweet_id, body.text_sha256, body.label)
    )
    return web.json_response({"settled": True, "label": body.label, "was": replaced})


async def reviewers(request: web.Request) -> web.Response:
    """GET /review/api/reviewers: every named reviewer (no token, no hash), the operator's."""
    found = await request.app[SERVICE].reviewer_list()
    return web.json_response({"reviewers": [r.as_json() for r in found]})


async def add_reviewer(request: web.Request) -> web.Response:
    """POST /review/api/reviewers: add a reviewer; the answer holds their token and link, shown this once."""
    body = await json_body(request, AddReviewer)
    shared = request.app[GUARD].reviewer
    added, token = await _service_call(request.app[SERVICE].add_reviewer(body.name, body.role, shared))
    link = f"{request.url.origin()}/review?token={token}"
    return web.json_response({"reviewer": added.as_json(), "token": token, "url": link}, status=201)


async def revoke_reviewer(request: web.Request) -> web.Response:
    """POST /review/api/reviewers/revoke: revoke a reviewer; their sessions end from the next request."""
    body = await json_body(request, NamedReviewer)
    revoked = await _service_call(request.app[SERVICE].revoke_reviewer(body.name))
    return web.json_response({"reviewer": revoked.as_json()})


async def add_gold(request: web.Request) -> web.Response:
    """POST /review/api/gold: store gold questions (the operator's); the same id and text again replaces one."""
    body = await json_body(request, GoldUpload)
    questions = [GoldQuestion(q.tweet_id, q.text, q.label, q.brand) for q in body.questions]
    rows = gold_rows(questions, [q.probabilities for q in body.questions], body.model_version, body.threshold)
    return web.json_response({"added": await request.app[SERVICE].add_gold(rows)}, status=201)


async def _service_call(call: Any) -> Any:
    try:
        return await call
    except ReviewError as exc:
        raise http_error(exc.status, str(exc)) from None
