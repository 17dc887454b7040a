"""`emostream review`: the review and trends pages served alone, against a running Kafka and ClickHouse.

The same routes, guard and service as in ``emostream up``; here on an aiohttp application of their own.
Run one per queue (the leases live in the process).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from emostream.stream.kafka.broker import free_port
from emostream.stream.kafka.config import KafkaConfig
from emostream.stream.kafka.topics import ensure_topics
from emostream.stream.review.config import ReviewSetup
from emostream.stream.review.routes import mount_review, review_url
from emostream.stream.review.service import ReviewService
from emostream.stream.web.auth import ADMIN, REVIEW, WebConfig, guard_for

log = logging.getLogger("emostream.review")


def serve_review(setup: ReviewSetup, web_config: WebConfig, topics: KafkaConfig, bootstrap: str) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code. ``topics``: how to lay out the labels topic if it is new."""
    asyncio.run(ensure_topics(bootstrap, [setup.labels_topic], topics))
    port = web_config.web_port or free_port(web_config.web_host)
    admin_token, review_token = web_config.tokens()
    guard = guard_for(web_config, port, {ADMIN: admin_token, REVIEW: review_token})
    app = web.Application(middlewares=[guard.middleware()])
    mount_review(app, ReviewService(setup, bootstrap), guard)

    async def announce(_: web.Application) -> None:
        log.info(
            "review page: %s (labels to %s on %s)",
            review_url(web_config, port, review_token),
            setup.labels_topic,
            bootstrap,
        )

    app.on_startup.append(announce)
    web.run_app(app, host=web_config.web_host, port=port, print=None, access_log=None)
    return 0
