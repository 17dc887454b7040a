"""Running a worker: load the model, open ClickHouse, create the topics, serve, and clean up."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust

from model.registry import ModelRegistry
from model.runtime import load_runtime
from schemas.settings import Settings
from stream.app import WorkerParts, create_app
from stream.broker import free_port
from stream.scoring import BatchScorer
from stream.sink import ClickHouseSink, chdb_path
from stream.state import broker_file, endpoint_file, read_state, remove_state, write_state
from stream.topics import ensure_topics

log = logging.getLogger("emostream.worker")

LOGGING_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,  # Faust applies this too: it must not silence emostream's loggers
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {  # two handlers: Faust resets the level of the root's first one to its own loglevel
        "root": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"},
        "emostream": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"},
    },
    "root": {"level": "WARNING", "handlers": ["root"]},
    "loggers": {"emostream": {"level": "INFO", "handlers": ["emostream"], "propagate": False}},
}


class NoBrokerError(RuntimeError):
    pass


def resolve_bootstrap(settings: Settings) -> str:
    """The configured Kafka, else the embedded broker a running ``emostream up`` started."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    state = read_state(broker_file(settings.home))
    if state:
        return str(state["bootstrap"])
    raise NoBrokerError(
        "no Kafka to talk to: set EMOSTREAM_KAFKA_BOOTSTRAP (or --kafka-bootstrap), "
        "or start the embedded stack with `emostream up`"
    )


def build_parts(settings: Settings) -> WorkerParts:
    version = ModelRegistry(settings.registry).require_current()
    model = load_runtime(settings, version.path)
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    sink.apply_schema()
    log.info(
        "model %s on %s (%s), batches of up to %d", version.name, model.device, model.runtime_name, settings.max_batch
    )
    return WorkerParts(
        BatchScorer(model, settings.review_threshold),
        sink,
        ThreadPoolExecutor(1, thread_name_prefix="emostream-blocking"),
        settings.max_batch,
    )


def add_web_views(app: faust.App, parts: WorkerParts) -> None:
    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        model = parts.scorer.model
        return web.json({"status": "ok", "model_version": model.version, "runtime": model.runtime_name})

    @app.page("/sql")
    class SqlView(faust.web.View):
        """Read-only SQL on the data this process owns (chDB allows one process per directory).

        POST the statement as the body, or GET with ``?q=``; answers ``{"columns": [...], "rows": [...]}``.
        """

        async def get(self, request: faust.web.Request) -> faust.web.Response:
            return await self._answer(request.query.get("q", ""))

        async def post(self, request: faust.web.Request) -> faust.web.Response:
            return await self._answer(await request.text())

        async def _answer(self, query: str) -> faust.web.Response:
            try:
                columns, rows = await parts.run_blocking(parts.sink.query, query)
            except Exception as exc:
                body, status = {"error": str(exc)}, 400
            else:
                body, status = {"columns": columns, "rows": rows}, 200
            return self.bytes(json.dumps(body, default=str).encode(), status=status, content_type="application/json")


class ReadyWorker(faust.Worker):
    """A Faust worker that calls back once everything, the web server included, is up."""

    def __init__(self, app: faust.App, on_ready: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._on_ready = on_ready

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._on_ready()


def run_worker(settings: Settings, bootstrap: str) -> int:
    """Serve until SIGINT/SIGTERM. Returns the exit code."""
    settings.home.mkdir(parents=True, exist_ok=True)
    parts = build_parts(settings)
    created = asyncio.run(
        ensure_topics(
            bootstrap, [settings.topic_tweets, settings.topic_review, settings.topic_dlq], settings.partitions
        )
    )
    if created:
        log.info("created topics %s with %d partitions", ", ".join(created), settings.partitions)
    port = settings.web_port or free_port(settings.web_host)
    app = create_app(settings, bootstrap, parts, port)
    add_web_views(app, parts)
    data_dir = chdb_path(parts.sink.dsn)
    endpoint: Path | None = endpoint_file(data_dir) if data_dir else None

    def announce() -> None:
        if endpoint:  # only now: `sql` and `demo` connect as soon as they see the file
            write_state(endpoint, url=f"http://{settings.web_host}:{port}", dsn=parts.sink.dsn)
        log.info(
            "ready: consuming %s from %s; web endpoint http://%s:%d",
            settings.topic_tweets,
            bootstrap,
            settings.web_host,
            port,
        )

    # The model, torch and transformers leave millions of long-lived objects; without freezing them,
    # every full collection (triggered by the consumer's per-record allocations) walks them all:
    # 7% of a core in the Kafka fetch thread, measured with py-spy.
    gc.collect()
    gc.freeze()
    worker = ReadyWorker(
        app, announce, loglevel="WARNING", logging_config=LOGGING_CONFIG, quiet=True, redirect_stdouts=False
    )
    worker.spinner = None  # a terminal spinner in a service's log is noise
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        if endpoint:
            remove_state(endpoint)
        parts.executor.shutdown(wait=True)
        parts.sink.close()
    return 0
