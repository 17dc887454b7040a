"""`emostream review`: the review and trends pages served alone, against a running Kafka and ClickHouse.

The same routes, guard and service as in ``emostream up``; here on an aiohttp application of their own.
Run one per queue (the leases live in the process).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from emostream.schemas.settings import Settings
from emostream.stream.kafka.broker import free_port
from emostream.stream.kafka.topics import ensure_topics
from emostream.stream.review.routes import mount_review, review_url
from emostream.stream.review.service import ReviewService
from emostream.stream.web.auth import ADMIN, REVIEW, guard_for, new_token

log = logging.getLogger("emostream.review")


def serve_review(settings: Settings, bootstrap: str) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    asyncio.run(ensure_topics(bootstrap, [settings.topic_labels], settings.partitions))
    port = settings.web_port or free_port(settings.web_host)
    review_token = settings.review_token.get_secret_value() if settings.review_token else new_token()
    admin_token = settings.web_token.get_secret_value() if settings.web_token else new_token()
    guard = guard_for(settings, port, {ADMIN: admin_token, REVIEW: review_token})
    app = web.Application(middlewares=[guard.middleware()])
    mount_review(app, ReviewService(settings, bootstrap), guard)

    async def announce(_: web.Application) -> None:
        log.info(
            "review page: %s (labels to %s on %s)",
            review_url(settings, port, review_token),
            settings.topic_labels,
            bootstrap,
        )

    app.on_startup.append(announce)
    web.run_app(app, host=settings.web_host, port=port, print=None, access_log=None)
    return 0
