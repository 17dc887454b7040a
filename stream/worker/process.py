"""Running a worker: load the model, open ClickHouse, create the topics, serve, and clean up."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust

from emostream.model.registry import ModelRegistry
from emostream.model.runtime import load_runtime
from emostream.schemas.text import escape_control
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.clickhouse.sql import ReadOnlySql
from emostream.stream.discovery import endpoint_file, remove_state, write_state
from emostream.stream.kafka.broker import free_port
from emostream.stream.kafka.faust_internals import StopSignalHook, require_internals
from emostream.stream.kafka.topics import ensure_topics
from emostream.stream.web.auth import ADMIN, REVIEW, guard_for, token_file, write_token
from emostream.stream.web.monitoring import ClickHouseProbe, Readiness, assigned_partitions, consumer_lag
from emostream.stream.web.views import add_web_views
from emostream.stream.worker.app import WorkerParts, create_app
from emostream.stream.worker.config import WorkerSetup
from emostream.stream.worker.review_policy import ReviewPolicy
from emostream.stream.worker.scoring import BatchScorer
from emostream.stream.worker.shutdown import Shutdown

log = logging.getLogger("emostream.worker")


class TextFormatter(logging.Formatter):
    """Log lines quote records, ClickHouse's errors and names from outside: their control characters are written
    as escapes, so a log read on a terminal cannot be made to rewrite the screen (``emostream.schemas.text``)."""

    def format(self, record: logging.LogRecord) -> str:
        """The line as the standard formatter writes it, with its control characters written as escapes."""
        return escape_control(super().format(record))


LOGGING_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,  # Faust applies this too: it must not silence emostream's loggers
    "formatters": {
        "plain": {
            "()": "emostream.stream.worker.process.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        }
    },
    "handlers": {  # two handlers: Faust resets the level of the root's first one to its own loglevel
        "root": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"},
        "emostream": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"},
    },
    "root": {"level": "WARNING", "handlers": ["root"]},
    "loggers": {"emostream": {"level": "INFO", "handlers": ["emostream"], "propagate": False}},
}


def use_event_loop(name: str) -> str:
    """Run Faust on ``name``'s event loop; returns the one in use.

    Faust's path from a fetched record to the agent is awaits, futures and callbacks per record, event-loop
    work that uvloop does in C: a bare Faust agent that only acks took 10,000 records at 11,000-16,000/s
    on asyncio's loop and 19,000/s on uvloop (``benchmarks/faust_ceiling.py``, 3 runs each). Must run before
    the worker creates its loops (mode sets the policy that every new loop, the consumer thread's too, uses).
    """
    if name != "uvloop":
        return "asyncio"
    try:
        import mode.loop

        mode.loop.use("uvloop")
    except ImportError:
        log.warning("uvloop is not installed: running on asyncio's event loop (pip install uvloop)")
        return "asyncio"
    return "uvloop"


def build_parts(setup: WorkerSetup, shutdown: Shutdown) -> WorkerParts:
    """The current model version loaded, the sink with its schema applied, and the scorer's thread."""
    version = ModelRegistry(setup.registry).require_current()
    model = load_runtime(setup.runtime, version.path)
    sink = ClickHouseSink(setup.dsn)
    sink.apply_schema()
    log.info(
        "model %s on %s (%s), batches of up to %d",
        version.name,
        model.device,
        model.runtime_name,
        setup.batch.max_batch,
    )
    return WorkerParts(
        BatchScorer(model, ReviewPolicy.from_routing(setup.routing), setup.limits),
        sink,
        ThreadPoolExecutor(1, thread_name_prefix="emostream-blocking"),
        shutdown,
    )


class ReadyWorker(StopSignalHook, faust.Worker):
    """A Faust worker that calls back once everything, the web server included, is up, and whose stop
    signals go through :class:`Shutdown` (bounded; a second signal exits at once)."""

    def __init__(self, app: faust.App, on_ready: Callable[[], None], shutdown: Shutdown, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._on_ready = on_ready
        self._emostream_shutdown = shutdown  # not `_shutdown`: that is mode's own Event on every Service

    async def on_startup_finished(self) -> None:
        """Faust's startup, then ``on_ready`` (the worker announces its endpoint and credential only now)."""
        await super().on_startup_finished()
        self._on_ready()

    def on_stop_signal(self, signal: signal.Signals) -> None:
        """Hand the stop to :class:`Shutdown`: the first signal starts its deadline, a second one aborts."""
        self._emostream_shutdown.request(signal.name)


def run_worker(setup: WorkerSetup, bootstrap: str, shutdown: Shutdown | None = None, review: bool = False) -> int:
    """Serve until SIGINT/SIGTERM. Returns the exit code.

    ``review``: serve the review and trends pages too (``up``, which owns the embedded chDB directory;
    a deployment runs them as their own service, ``emostream review``, one per queue).

    Refuses to start (:class:`~emostream.stream.kafka.faust_internals.FaustInternalsMissing`) before anything
    else when a private part of Faust, mode or aiokafka that the worker relies on is gone.
    """
    require_internals()
    topics, web = setup.topics, setup.web
    shutdown = shutdown or Shutdown(setup.worker.shutdown_timeout)
    setup.home.mkdir(parents=True, exist_ok=True)
    loop = use_event_loop(setup.worker.event_loop)
    parts = build_parts(setup, shutdown)
    sql = ReadOnlySql(setup.query_dsn, setup.sql)
    created = asyncio.run(
        ensure_topics(
            bootstrap,
            [topics.topic_tweets, topics.topic_review, topics.topic_dlq] + ([topics.topic_labels] if review else []),
            setup.kafka,
        )
    )
    if created:
        kafka = setup.kafka
        log.info(
            "created topics %s with %d partitions, %d replicas (min.insync.replicas %d)",
            ", ".join(created),
            kafka.partitions,
            kafka.replication_factor,
            kafka.min_insync_replicas,
        )
    port = web.web_port or free_port(web.web_host)
    token, review_token = web.tokens()
    guard = guard_for(web, port, {ADMIN: token, REVIEW: review_token})
    app = create_app(setup, bootstrap, parts, port)
    mount = None
    if review:
        from emostream.stream.review.routes import mount_review
        from emostream.stream.review.service import ReviewService

        service = ReviewService(setup.review, bootstrap)
        mount = functools.partial(mount_review, service=service, guard=guard)
    # Metrics and readiness read their sources at each request: the serving model (a hot swap shows at
    # once) and Faust's consumer (before it has started, or once it stops: no lag, no partitions).
    topic = topics.topic_tweets
    parts.metrics.follow_model(lambda: parts.scorer.model)
    parts.metrics.follow_lag(lambda: consumer_lag(app.consumer, topic))
    readiness = Readiness(
        model=lambda: parts.scorer.model,
        clickhouse=ClickHouseProbe(setup.dsn),
        partitions=lambda: assigned_partitions(app.consumer, topic),
        health=parts.metrics.health,
        failing_timeout=setup.worker.failing_batch_timeout,
    )
    sql_thread = add_web_views(
        app,
        guard,
        sql,
        setup.sql.sql_timeout + 5,
        lambda: parts.scorer.model,
        mount,
        metrics=parts.metrics,
        readiness=readiness,
        labels_dsn=setup.dsn,
    )
    data_dir = setup.dsn.directory
    endpoint: Path | None = endpoint_file(data_dir) if data_dir else None

    def forget_endpoint() -> None:
        if endpoint and remove_state(endpoint):
            token_file(endpoint).unlink(missing_ok=True)

    if endpoint:
        credential = str(token_file(endpoint))
    else:
        credential = "EMOSTREAM_WEB_TOKEN" if web.web_token else "a random one: set EMOSTREAM_WEB_TOKEN to use it"

    def announce() -> None:
        if endpoint:  # only now: `sql` and `demo` connect as soon as they see the file
            write_token(token_file(endpoint), token)
            write_state(endpoint, url=f"http://{web.web_host}:{port}", dsn=setup.dsn.url)
        log.info(
            "ready: consuming %s from %s on %s; web endpoint http://%s:%d (credential: %s)",
            topics.topic_tweets,
            bootstrap,
            loop,
            web.web_host,
            port,
            credential,
        )
        if review:
            from emostream.stream.review.routes import review_url

            log.info("review page: %s", review_url(web, port, review_token))

    shutdown.on_abort(forget_endpoint)
    # The model, torch and transformers leave millions of long-lived objects; without freezing them,
    # every full collection (triggered by the consumer's per-record allocations) walks them all:
    # 7% of a core in the Kafka fetch thread, measured with py-spy.
    gc.collect()
    gc.freeze()
    worker = ReadyWorker(
        app,
        announce,
        shutdown,
        loglevel="WARNING",
        logging_config=LOGGING_CONFIG,
        quiet=True,
        redirect_stdouts=False,
    )
    worker.spinner = None  # a terminal spinner in a service's log is noise
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        forget_endpoint()
        parts.close()
        sql_thread.shutdown(wait=True)
        sql.close()
        readiness.close()  # before the sink: its chDB handle is one more on the same engine
        parts.sink.close()
        shutdown.done()
    return 0
