"""The worker's web endpoint: health, readiness, metrics, read-only SQL and the training labels, every route
behind the credential.

SQL runs on a thread and a ClickHouse client of its own (:class:`emostream.stream.clickhouse.sql.ReadOnlySql`), never on
the thread that scores and inserts, so a slow statement cannot stall the stream; the readiness probe's
``SELECT 1`` likewise (:class:`emostream.stream.web.monitoring.ClickHouseProbe`). ``/metrics`` and ``/readyz`` need the
operator's token like every other route: Prometheus sends it as ``authorization: credentials_file``.

``GET /labels`` (and ``/labels/count``) hands the retraining job the reviewers' labels: exactly
``TRAINING_LABELS_WITH_IDS``, as a Parquet file, on a thread and a trusted client of its own on the
writer's DSN (neither the user-SQL client and its limits nor the scoring thread), so the snapshot is
never cut at user SQL's row limit. In the embedded mode this process owns the chDB directory, so this
route is the only way another process gets them. It is the operator's alone: the guard refuses a
reviewer's credential (not under ``/review`` or ``/trends``) and a request without one.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust

from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.clickhouse.sql import ReadOnlySql, SqlError
from emostream.stream.web.auth import RequestGuard
from emostream.stream.web.endpoint import (
    CHUNK,
    LABELS_COUNT_ROUTE,
    LABELS_ROUTE,
    PARQUET_TYPE,
    count_training_labels,
    export_training_labels,
)

if TYPE_CHECKING:
    from emostream.model.runtime import ScoringRuntime
    from emostream.stream.web.monitoring import Readiness, WorkerMetrics

SQL_CONTENT_TYPE = "application/json"


def add_web_views(
    app: faust.App,
    guard: RequestGuard,
    sql: ReadOnlySql,
    timeout: float,
    serving: Callable[[], ScoringRuntime],
    mount: Callable[[Any], None] | None = None,
    *,
    metrics: WorkerMetrics | None = None,
    readiness: Readiness | None = None,
    labels_dsn: ClickHouseDsn | None = None,
) -> ThreadPoolExecutor:
    """Register the routes and the guard; returns the SQL thread, for the caller to shut down.

    ``serving`` returns the model version scoring now (a hot swap replaces it). ``mount`` adds more routes
    to Faust's aiohttp application (the review pages, in ``up``); ``metrics`` adds ``/metrics`` and
    ``readiness`` adds ``/readyz`` (the caller closes it); ``labels_dsn`` (the writer's DSN) adds
    ``/labels`` and ``/labels/count`` (whose thread stops with the app).
    """
    sql_thread = ThreadPoolExecutor(1, thread_name_prefix="emostream-sql")
    labels = LabelsExport(labels_dsn) if labels_dsn is not None else None

    def on_webserver_init(web: Any) -> None:
        web.web_app.middlewares.append(guard.middleware())
        if labels is not None:
            labels.mount(web.web_app)
        if mount is not None:
            mount(web.web_app)

    if labels is not None:

        async def stop_labels(sender: Any = None, **kwargs: Any) -> None:
            labels.close()

        app.on_before_shutdown.connect(stop_labels)  # type: ignore[arg-type]  # no function matches mode 0.7's SignalHandlerT

    app.on_webserver_init = on_webserver_init  # type: ignore[method-assign]  # Faust's documented hook

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        model = serving()  # the version serving now: a hot swap replaces it
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


class LabelsExport:
    """``GET /labels``: the training labels as Parquet, from a trusted client on a thread of its own.

    Each request opens its own client on the writer's DSN (a chDB handle on the engine this process owns,
    or an HTTP session) and closes it after; ClickHouse writes the file to a private scratch directory,
    which is streamed to the caller in chunks with its length announced, then removed. An export never
    waits behind user SQL or a batch's insert, nor they behind it.
    """

    def __init__(self, dsn: ClickHouseDsn) -> None:
        self.dsn = dsn
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="emostream-labels")

    def mount(self, web_app: Any) -> None:
        """Add ``GET /labels`` and ``GET /labels/count`` to an aiohttp application (the guard already on it)."""
        web_app.router.add_get(LABELS_ROUTE, self.download)
        web_app.router.add_get(LABELS_COUNT_ROUTE, self.count)

    async def _on_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.thread, functools.partial(fn, *args))

    async def download(self, request: Any) -> Any:
        """The labels as Parquet, the row count in ``X-Emostream-Rows``; 500 if ClickHouse fails, 503 at shutdown."""
        from aiohttp import web

        scratch = Path(tempfile.mkdtemp(prefix="emostream-labels-"))  # mode 0700: the labels stay private
        try:
            path = scratch / "labels.parquet"
            try:
                rows = await self._on_thread(export_training_labels, self.dsn, path)
            except (SqlError, OSError) as exc:
                return web.json_response({"error": str(exc)}, status=500)
            except RuntimeError:  # the thread has stopped: the worker is shutting down
                return web.json_response({"error": "the worker is shutting down"}, status=503)
            response = web.StreamResponse(headers={"Content-Type": PARQUET_TYPE, "X-Emostream-Rows": str(rows)})
            response.content_length = path.stat().st_size
            await response.prepare(request)
            with path.open("rb") as handle:
                while chunk := await self._on_thread(handle.read, CHUNK):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def count(self, request: Any) -> Any:
        """``{"labels": n}``: how many rows a download would hold now; 500 or 503 as for :meth:`download`."""
        from aiohttp import web

        try:
            n = await self._on_thread(count_training_labels, self.dsn)
        except SqlError as exc:
            return web.json_response({"error": str(exc)}, status=500)
        except RuntimeError:
            return web.json_response({"error": "the worker is shutting down"}, status=503)
        return web.json_response({"labels": n})

    def close(self) -> None:
        """Stop the export thread without waiting; queued exports are cancelled, later requests get 503."""
        self.thread.shutdown(wait=False, cancel_futures=True)
