"""What every review route shares: the app's keys, JSON bodies validated before use, errors as JSON."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from emostream.schemas import describe_errors
from emostream.stream.review.service import ReviewService
from emostream.stream.web.auth import RequestGuard
from emostream.stream.web.sessions import SessionError, check_reviewer

SERVICE = web.AppKey("review_service", ReviewService)
GUARD = web.AppKey("review_guard", RequestGuard)


def reviewer_checked(request: web.Request) -> Any:
    """The caller (``request["principal"]``), refused with 400 if its server-bound name is unusable."""
    principal = request["principal"]
    try:
        check_reviewer(principal.reviewer)
    except SessionError as exc:
        raise http_error(400, str(exc)) from None
    return principal


async def json_body(request: web.Request, model: type[Any]) -> Any:
    """A JSON body (and only JSON: a form post from another site cannot pass), validated by ``model``."""
    if request.content_type != "application/json":
        raise http_error(415, "send the body as application/json")
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise http_error(400, describe_errors(exc)) from None


def http_error(status: int, message: str) -> web.HTTPException:
    """An HTTP error whose body is ``{"error": message}``."""
    return STATUS[status](text=json.dumps({"error": message}), content_type="application/json")


STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    415: web.HTTPUnsupportedMediaType,
    503: web.HTTPServiceUnavailable,
}
