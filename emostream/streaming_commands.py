"""Streaming commands: broker, worker, up, review, ingest, sql, trends, labels and demo."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from emostream.cli_common import (
    Data,
    Dsn,
    Home,
    Registry,
    UsageError,
    app,
    setting,
    settings_command,
    settings_from,
)
from emostream.console import err, out, table
from emostream.schemas import LABELS
from emostream.schemas.text import escape_control
from emostream.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from emostream.schemas import Tweet
    from emostream.stream.clickhouse.sql import SqlResult
    from emostream.stream.kafka.ingest import OnError

Bootstrap = Annotated[str | None, setting("kafka_bootstrap")]


def configure_logging() -> None:
    """Log as the worker does (its ``LOGGING_CONFIG``): emostream's INFO, others' warnings, to stderr, escaped."""
    from emostream.stream.worker.process import LOGGING_CONFIG

    logging.config.dictConfig(LOGGING_CONFIG)


@app.command()
def broker(
    port: Annotated[
        int | None, typer.Option(help="port; default: that of EMOSTREAM_KAFKA_BOOTSTRAP, else 9092")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Run the embedded Kafka-protocol broker (tansu) until stopped. It keeps everything in memory."""
    from emostream.stream.kafka.broker import tansu_command

    if port is None:
        bootstrap = load_settings().kafka_bootstrap
        port = int(bootstrap.split(",")[0].rsplit(":", 1)[1]) if bootstrap else 9092
    url = f"tcp://{host}:{port}"
    err.print(
        f"embedded broker (tansu) on {host}:{port}. It keeps topics, offsets and consumer groups in memory "
        "only: everything is gone when it stops. Stop it with Ctrl-C."
    )
    sys.stderr.flush()
    command = tansu_command(url)
    os.execv(command[0], command)


SERVING_FIELDS = (
    "kafka_bootstrap",
    "clickhouse_dsn",
    "registry",
    "home",
    "runtime",
    "device",
    "torch_threads",
    "inference_batch_size",
    "max_length",
    "max_batch",
    "max_wait",
    "max_record_bytes",
    "created_at_earliest",
    "created_at_max_ahead",
    "failing_batch_timeout",
    "review_threshold",
    "review_sample",
    "review_budget",
    "topic_tweets",
    "topic_review",
    "topic_dlq",
    "partitions",
    "replication_factor",
    "min_insync_replicas",
    "group_id",
    "session_timeout",
    "heartbeat_interval",
    "fetch_max_wait",
    "event_loop",
    "web_host",
    "web_port",
    "web_token",
    "shutdown_timeout",
    "model_poll_interval",
    "clickhouse_query_dsn",
    "sql_timeout",
    "sql_max_rows",
    "sql_max_bytes",
    "sql_max_memory",
)


@app.command()
@settings_command(SERVING_FIELDS)
def worker(settings: Settings) -> None:
    """Score tweets from a running Kafka into ClickHouse (join more workers to share the partitions)."""
    from emostream.stream.discovery import resolve_bootstrap
    from emostream.stream.worker.process import run_worker

    configure_logging()
    bootstrap = resolve_bootstrap(settings.kafka_bootstrap, settings.home)
    if not settings.kafka_bootstrap:  # joining the embedded broker `up` started
        settings = settings.on_embedded_broker()
    raise typer.Exit(run_worker(settings.worker_setup(), bootstrap))


PAGE_FIELDS = (
    "review_token",
    "reviewer",
    "review_lease",
    "review_opinions",
    "review_gold_rate",
    "review_gold_min_accuracy",
    "session_hours",
    "topic_labels",
)


@app.command()
@settings_command((*SERVING_FIELDS, *PAGE_FIELDS))
def up(settings: Settings) -> None:
    """The embedded stack: broker (unless a bootstrap is configured), worker and web endpoint. Ctrl-C stops all."""
    from emostream.stream.discovery import broker_file, remove_state, write_state
    from emostream.stream.kafka.broker import EmbeddedBroker
    from emostream.stream.worker.process import run_worker
    from emostream.stream.worker.shutdown import Shutdown

    configure_logging()
    shutdown = Shutdown(settings.shutdown_timeout)
    if settings.kafka_bootstrap:
        raise typer.Exit(run_worker(settings.worker_setup(), settings.kafka_bootstrap, shutdown, review=True))
    settings = settings.on_embedded_broker()
    settings.home.mkdir(parents=True, exist_ok=True)
    state = broker_file(settings.home)
    with EmbeddedBroker(log_file=settings.home / "broker.log") as embedded:
        shutdown.on_abort(embedded.kill)  # a forced exit still takes the broker down
        shutdown.on_abort(lambda: remove_state(state))
        write_state(state, bootstrap=embedded.bootstrap)
        err.print(f"embedded broker on {embedded.bootstrap} (in memory: topics vanish when `up` stops)")
        try:
            code = run_worker(settings.worker_setup(), embedded.bootstrap, shutdown, review=True)
        finally:
            remove_state(state)
    raise typer.Exit(code)


REVIEW_FIELDS = (
    "kafka_bootstrap",
    "clickhouse_dsn",
    "clickhouse_query_dsn",
    "home",
    "partitions",
    "replication_factor",
    "min_insync_replicas",
    "web_host",
    "web_port",
    "web_token",
    *PAGE_FIELDS,
    "sql_timeout",
    "sql_max_rows",
    "sql_max_bytes",
    "sql_max_memory",
)


review_app = typer.Typer(add_completion=False)
app.add_typer(review_app, name="review")


@review_app.callback(invoke_without_command=True)
@settings_command(REVIEW_FIELDS, group=True)
def review(settings: Settings) -> None:
    """Serve the review and trends pages alone, against a running Kafka and ClickHouse (one per queue).

    `emostream up` serves them already, beside its worker; this is for deployments where workers run
    elsewhere. Prints the page's URL (with a generated token unless EMOSTREAM_REVIEW_TOKEN is set).
    `emostream review simulate` answers the queue from a file of gold labels instead of people.
    """
    from emostream.stream.discovery import resolve_bootstrap
    from emostream.stream.kafka.config import KafkaConfig
    from emostream.stream.review.server import serve_review
    from emostream.stream.web.auth import WebConfig
    from emostream.stream.web.endpoint import Endpoint

    directory = settings.clickhouse().directory
    if directory is not None and Endpoint.find(directory) is not None:
        raise UsageError(f"`emostream up` owns {directory} and serves its review page already: open the URL it printed")
    configure_logging()
    bootstrap = resolve_bootstrap(settings.kafka_bootstrap, settings.home)
    setup, web = settings.review_setup(), settings.piece(WebConfig)
    raise typer.Exit(serve_review(setup, web, settings.piece(KafkaConfig), bootstrap))


@app.command()
def ingest(
    file: Annotated[str | None, typer.Argument(help="JSONL or CSV file of tweets, or - for stdin")] = None,
    replay: Annotated[
        str | None, typer.Option(help="replay a data set split (validation, test, train) instead")
    ] = None,
    brands: Annotated[str, typer.Option(help="with --replay: comma-separated brands to attribute tweets to")] = (
        "acme,globex,initech"
    ),
    rate: Annotated[float, typer.Option(help="tweets per second; 0: as fast as possible")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="send at most this many tweets")] = None,
    run_id: Annotated[str | None, typer.Option(help="with --replay: id prefix (same id: idempotent re-run)")] = None,
    on_error: Annotated[str, typer.Option(help="skip (report and go on) or fail (stop at the first bad line)")] = (
        "skip"
    ),
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl or csv; default: by file extension")] = None,
    id_field: Annotated[str, typer.Option(help="input field holding the tweet id")] = "id",
    text_field: Annotated[str, typer.Option(help="input field holding the text")] = "text",
    created_at_field: Annotated[str, typer.Option(help="input field holding the timestamp")] = "created_at",
    brand_field: Annotated[str, typer.Option(help="input field holding the brand")] = "brand",
    data: Data = None,
    kafka_bootstrap: Bootstrap = None,
    home: Home = None,
    topic: Annotated[str | None, setting("topic_tweets", "--topic")] = None,
) -> None:
    """Send tweets to the input topic: idempotent producer, acks=all, progress bar, counts at the end."""
    import asyncio

    from emostream.stream.discovery import resolve_bootstrap
    from emostream.stream.kafka.ingest import FieldMap, IngestError, produce, read_tweets, replay_tweets

    if on_error not in ("skip", "fail"):
        raise UsageError(f"--on-error must be skip or fail, not {on_error!r}")
    if (file is None) == (replay is None):
        raise UsageError("give either a FILE (or - for stdin) or --replay SPLIT")
    settings = load_settings(data=data, kafka_bootstrap=kafka_bootstrap, home=home, topic_tweets=topic)
    bootstrap = resolve_bootstrap(settings.kafka_bootstrap, settings.home)
    if replay is not None:
        from emostream.trainer.data import load_sources

        if replay not in ("train", "validation", "test"):
            raise UsageError(f"--replay must be train, validation or test, not {replay!r}")
        texts = load_sources(settings.data).dataset[replay]["text"][:limit]  # several: all of them, test the first's
        brand_list = [b.strip() for b in brands.split(",") if b.strip()]
        if not brand_list:
            raise UsageError("--brands needs at least one brand")
        run = run_id or time.strftime("r%Y%m%d%H%M%S")
        tweets: Iterator[tuple[int, Tweet | str]] = (
            (i, t) for i, t in enumerate(replay_tweets(texts, replay, brand_list, run, settings.seed), 1)
        )
        total: int | None = len(texts)
    else:
        assert file is not None
        if file != "-" and not Path(file).is_file():
            raise UsageError(f"{file}: no such file")
        fields = FieldMap(id=id_field, text=text_field, created_at=created_at_field, brand=brand_field)
        tweets = read_tweets(file, fields, fmt)
        if limit is not None:
            tweets = (item for n, item in enumerate(tweets) if n < limit)
        total = limit
    try:
        report = asyncio.run(
            produce(
                bootstrap,
                settings.topic_tweets,
                tweets,
                rate=rate,
                on_error=cast("OnError", on_error),  # checked above: skip or fail
                total=total,
            )
        )
    except IngestError as exc:
        raise UsageError(f"{file}: {exc}") from None
    for number, reason in report.bad[:20]:
        err.print(f"{file}:{number}: skipped: {reason}", highlight=False)
    if len(report.bad) > 20:
        err.print(f"... and {len(report.bad) - 20} more bad lines")
    rate_seen = report.sent / report.seconds if report.seconds else 0
    out.print(
        f"sent {report.sent:,} tweets to {settings.topic_tweets} in {report.seconds:.1f} s "
        f"({rate_seen:,.0f}/s); {len(report.bad):,} bad lines skipped"
    )


@app.command()
def sql(
    statement: Annotated[str, typer.Argument(help="one statement that reads: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN")],
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json (one object a line)")] = "table",
    clickhouse_dsn: Dsn = None,
    clickhouse_query_dsn: Annotated[str | None, setting("clickhouse_query_dsn")] = None,
    home: Home = None,
    sql_timeout: Annotated[float | None, setting("sql_timeout")] = None,
    sql_max_rows: Annotated[int | None, setting("sql_max_rows")] = None,
    sql_max_bytes: Annotated[int | None, setting("sql_max_bytes")] = None,
    sql_max_memory: Annotated[int | None, setting("sql_max_memory")] = None,
) -> None:
    """Run read-only SQL on emostream's ClickHouse and print the result (whether or not `up` is running).

    ClickHouse itself refuses what is not a read: the statement runs with readonly=1, one at a time,
    within --sql-timeout and the result-size limits.
    """
    if fmt not in ("table", "csv", "json"):
        raise UsageError(f"--format must be table, csv or json, not {fmt!r}")
    print_result(run_sql(settings_from(locals()), statement), fmt)


def run_sql(settings: Settings, statement: str) -> SqlResult:
    """Through the running worker's endpoint when it owns the chDB directory, else with a client of our own."""
    from emostream.stream.web.endpoint import Endpoint

    directory = settings.query_clickhouse().directory
    endpoint = Endpoint.find(directory) if directory else None
    if endpoint is not None:
        return endpoint.sql(statement, timeout=settings.sql_timeout + 10)
    if directory is not None and not directory.exists():
        raise UsageError(
            f"{directory}: no ClickHouse data here yet; start `emostream up` or set EMOSTREAM_CLICKHOUSE_DSN"
        )
    from emostream.stream.clickhouse.sql import ReadOnlySql, SqlLimits

    client = ReadOnlySql(settings.query_clickhouse(), settings.piece(SqlLimits))
    try:
        return client.query(statement)
    finally:
        client.close()


def print_result(result: SqlResult, fmt: str) -> None:
    """Values print as ClickHouse printed them; CSV lines end with LF.

    JSON escapes every control character itself. CSV is data for a program when it goes to a pipe or a
    file, and is written exactly; on a terminal its control characters are escaped like the table's."""
    if fmt == "json":
        for row in result.rows:
            print(json.dumps(dict(zip(result.columns, row, strict=True)), default=str))
    elif fmt == "csv":
        shown = escape_control if sys.stdout.isatty() else str
        writerow = csv_writer(sys.stdout)
        writerow([shown(name) for name in result.columns])
        for row in result.rows:
            writerow([shown(_text(value, null="")) for value in row])
    else:
        out.print(table("", result.columns, ([_text(value) for value in row] for row in result.rows), raw=True))


def csv_writer(handle: Any) -> Any:
    """``writerow`` for CSV with LF line ends that the csv module reads back exactly (over a file opened
    with ``newline=''``, or ``io.StringIO(text, newline='')``): every string, any character in it.

    Python 3.11's writer quotes a field for the delimiter, the quote and the line terminator's own
    characters only: with LF line ends a bare CR went out unquoted and came back as a line break. A row
    holding a CR is written with every field quoted (still RFC 4180)."""
    import csv

    minimal = csv.writer(handle, lineterminator="\n")
    quoted = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(row: Any) -> Any:
        cr = any(isinstance(value, str) and "\r" in value for value in row)
        return (quoted if cr else minimal).writerow(row)

    return writerow


def _text(value: Any, null: str = "NULL") -> str:
    if value is None:
        return null
    if isinstance(value, bool):  # as ClickHouse prints a Bool
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


@app.command()
def trends(
    brand: Annotated[str | None, typer.Option(help="only this brand; default: all brands together")] = None,
    since: Annotated[str, typer.Option(help="how far back: a number and s, m, h, d or w (e.g. 24h, 90m)")] = "24h",
    by: Annotated[str, typer.Option(help="bucket: minute, hour or day")] = "hour",
    plot: Annotated[Path | None, typer.Option(help="also draw the shares as a line chart (PNG)")] = None,
    spikes: Annotated[bool, typer.Option(help="list buckets where a label's share jumps above its trailing mean")] = (
        False
    ),
    k: Annotated[float, typer.Option(help="with --spikes: standard deviations above the trailing mean")] = 3.0,
    window: Annotated[int, typer.Option(help="with --spikes: trailing buckets the mean and deviation use")] = 12,
    clickhouse_dsn: Dsn = None,
    clickhouse_query_dsn: Annotated[str | None, setting("clickhouse_query_dsn")] = None,
    home: Home = None,
) -> None:
    """The share of each emotion per time bucket, from the rollup that follows emotion_scores as it fills."""
    from emostream.stream.clickhouse.trends import Trends, parse_duration

    settings = load_settings(clickhouse_dsn=clickhouse_dsn, clickhouse_query_dsn=clickhouse_query_dsn, home=home)
    seconds = parse_duration(since)
    result = Trends.load(lambda statement: run_sql(settings, statement), by, seconds, brand)  # type: ignore[arg-type]  # a str: Trends checks it
    scope = f"brand {brand}" if brand else "all brands"
    if result.shares.empty:
        err.print(f"no scored tweets for {scope} in the last {since}")
        return
    rows = (
        [str(bucket), f"{int(result.tweets[bucket]):,}", *(f"{100 * share:.1f}" for share in shares)]
        for bucket, shares in zip(result.shares.index, result.shares.to_numpy(), strict=True)
    )
    out.print(
        table(f"Emotion shares (%) per {by}, {scope}, last {since}", ["bucket", "tweets", *LABELS], rows, raw=True)
    )
    if spikes:
        found = result.spikes(k=k, window=window)
        title = f"Spikes: share > trailing mean + {k:g} sd over {window} {by}s"
        out.print(
            table(
                title,
                ["bucket", "label", "share %", "trailing mean %", "z", "tweets"],
                (
                    [
                        str(r.bucket),
                        r.label,
                        f"{100 * r.share:.1f}",
                        f"{100 * r.trailing_mean:.1f}",
                        f"{r.z:.1f}",
                        r.tweets,
                    ]
                    for r in found.itertuples()
                ),
                raw=True,
            )
            if not found.empty
            else title + ": none"
        )
    if plot is not None:
        out.print(f"chart: {result.plot(plot, f'Emotion shares per {by}, {scope}')}")


@app.command()
def labels(
    out_file: Annotated[Path | None, typer.Option("--out", help="write the CSV here; default: standard output")] = None,
    clickhouse_dsn: Dsn = None,
    clickhouse_query_dsn: Annotated[str | None, setting("clickhouse_query_dsn")] = None,
    home: Home = None,
    with_ids: Annotated[
        bool, typer.Option("--with-ids", help="add a tweet_id column first (what `retrain --labels` reads)")
    ] = False,
) -> None:
    """Export the reviewers' labels as a `text,label` CSV that `emostream train --data` reads.

    The latest label of each tweet counts (re-labelling keeps history, an undo withdraws it); `none`
    ("no emotion fits") is left out. All of them: the export is emostream's own query on the writer's
    ClickHouse (through the running `up` in the embedded mode), not user SQL with its row limit; every
    text reads back exactly with a CSV reader (quoted line breaks, CR, U+2028 and the like included).
    """
    import tempfile

    from emostream.console import literal
    from emostream.loop_commands import export_labels, write_labels_csv

    settings = load_settings(clickhouse_dsn=clickhouse_dsn, clickhouse_query_dsn=clickhouse_query_dsn, home=home)
    with tempfile.TemporaryDirectory(prefix="emostream-labels-") as scratch:
        snapshot = Path(scratch) / "labels.parquet"
        export_labels(settings, snapshot)
        if out_file is None:
            write_labels_csv(snapshot, sys.stdout, with_ids)
            return
        out_file.parent.mkdir(parents=True, exist_ok=True)
        with out_file.open("w", newline="", encoding="utf-8") as handle:
            n = write_labels_csv(snapshot, handle, with_ids)
    err.print(literal(f"{n:,} labelled tweets written to {out_file}"))


@app.command()
def demo(
    registry: Registry = None,
    data: Data = None,
    home: Home = None,
    keep_open: Annotated[
        bool, typer.Option(help="keep the stack and its review page running afterwards, until Ctrl-C")
    ] = False,
) -> None:
    """The whole loop on the embedded defaults: model, broker, worker, 2,000 tweets, trends, the review
    queue; then stop (or, with --keep-open, stay up for the review page)."""
    from emostream.demo import run_demo
    from emostream.training_commands import train

    settings = load_settings(registry=registry, data=data, home=home)
    run_demo(settings, lambda: train(registry=settings.registry, data=settings.data), keep_open=keep_open)
