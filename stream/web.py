"""The worker's web endpoint: health, readiness, metrics and read-only SQL, every route behind the credential.

SQL runs on a thread and a ClickHouse client of its own (:class:`stream.sql.ReadOnlySql`), never on
the thread that scores and inserts, so a slow statement cannot stall the stream; the readiness probe's
``SELECT 1`` likewise (:class:`stream.metrics.ClickHouseProbe`). ``/metrics`` and ``/readyz`` need the
operator's token like every other route: Prometheus sends it as ``authorization: credentials_file``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import faust

from stream.auth import RequestGuard
from stream.sql import ReadOnlySql, SqlError

if TYPE_CHECKING:
    from stream.metrics import Readiness, WorkerMetrics
    from stream.scoring import BatchScorer

SQL_CONTENT_TYPE = "application/json"


def add_web_views(
    app: faust.App,
    guard: RequestGuard,
    sql: ReadOnlySql,
    timeout: float,
    scorer: BatchScorer,
    mount: Callable[[Any], None] | None = None,
    *,
    metrics: WorkerMetrics | None = None,
    readiness: Readiness | None = None,
) -> ThreadPoolExecutor:
    """Register the routes and the guard; returns the SQL thread, for the caller to shut down.

    ``mount`` adds more routes to Faust's aiohttp application (the review pages, in ``up``); ``metrics``
    adds ``/metrics`` and ``readiness`` adds ``/readyz`` (the caller closes it).
    """
    sql_thread = ThreadPoolExecutor(1, thread_name_prefix="emostream-sql")

    def on_webserver_init(web: Any) -> None:
        web.web_app.middlewares.append(guard.middleware())
        if mount is not None:
            mount(web.web_app)

    app.on_webserver_init = on_webserver_init  # type: ignore[method-assign]

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        model = scorer.model  # the version serving now: a hot swap replaces it
        return web.json({"status": "ok", "model_version": model.version, "runtime": model.runtime_name})

    if metrics is not None:

        @app.page("/metrics")
        async def prometheus(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            """The worker's own registry, in the exposition format the scraper's ``Accept`` asks for."""
            body, content_type = metrics.exposition(request.headers.get("Accept"))
            # as a header: aiohttp refuses a content_type argument that carries a charset
            return web.bytes(body, headers={"Content-Type": content_type})

    if readiness is not None:

        @app.page("/readyz")
        async def readyz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            """200 when the worker can do its job now; 503 naming the checks that failed."""
            status, body = await readiness.report()
            return web.json(body, status=status)

    @app.page("/sql")
    class SqlView(faust.web.View):
        """POST a statement as the body; answers ClickHouse's ``JSONCompact``, or ``{"error": ...}``."""

        async def post(self, request: faust.web.Request) -> faust.web.Response:
            statement = await request.text()
            loop = asyncio.get_running_loop()
            try:
                body = await asyncio.wait_for(loop.run_in_executor(sql_thread, sql.run, statement), timeout)
            except SqlError as exc:
                return self.json({"error": str(exc)}, status=400)
            except TimeoutError:
                return self.json({"error": f"no answer within {timeout:.0f} s"}, status=504)
            return self.bytes(body, content_type=SQL_CONTENT_TYPE)

    return sql_thread
