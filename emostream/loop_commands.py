"""The review loop's commands: `retrain` (once or as the watching job) and `review simulate`.

They sit on top of both halves: the labels come out of ClickHouse on a trusted path (the running
`up`'s operator-only ``/labels`` route in the embedded mode, else a client of our own on the writer's
DSN; never user SQL, whose row limit would cut the snapshot), and the training side turns a snapshot
of them (Parquet, which keeps every string as it is) into a challenger. Neither half imports the other.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from emostream.cli_common import Data, Dsn, Home, Registry, UsageError, app, setting, settings_from
from emostream.console import err, literal, out, table
from emostream.schemas.settings import Settings
from emostream.streaming_commands import review_app

if TYPE_CHECKING:
    from emostream.stream.web.endpoint import Endpoint

LOCK_FILE = ".retrain.lock"


@contextmanager
def one_round_at_a_time(registry: Path, wait: bool) -> Iterator[None]:
    """An exclusive lock in the registry: two retrain processes never train at once (``--watch`` waits)."""
    registry.mkdir(parents=True, exist_ok=True)
    with (registry / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UsageError(f"{registry}: a retraining round is running already ({holder}); try again later") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _labels_source(settings: Settings) -> tuple[str, Endpoint | None]:
    """The writer's DSN, and the running `up`'s endpoint when one owns its chDB directory (else None)."""
    from emostream.stream.clickhouse.sink import chdb_path
    from emostream.stream.web.endpoint import Endpoint

    dsn = settings.resolved_clickhouse_dsn()
    directory = chdb_path(dsn)
    endpoint = Endpoint.find(directory) if directory else None
    if endpoint is None and directory is not None and not directory.exists():
        raise UsageError(
            f"{directory}: no ClickHouse data here yet; start `emostream up` or set EMOSTREAM_CLICKHOUSE_DSN"
        )
    return dsn, endpoint


def export_labels(settings: Settings, path: Path) -> int:
    """The reviewers' current labels (``TRAINING_LABELS_WITH_IDS``) as a Parquet file at ``path``; its rows.

    Trusted, not user SQL: through the running `up`'s ``/labels`` route (it owns the chDB directory), or a
    client of our own on the writer's DSN (no `up`, or a ClickHouse server). No row limit applies.
    """
    from emostream.stream.web.endpoint import export_training_labels

    dsn, endpoint = _labels_source(settings)
    return endpoint.training_labels(path) if endpoint is not None else export_training_labels(dsn, path)


def export_snapshot(settings: Settings, directory: Path) -> tuple[Path, int]:
    """The reviewers' current labels (tweet_id, text, label) written to a Parquet file, and how many there are."""
    path = directory / f"review_labels-{time.strftime('%Y%m%dT%H%M%S')}.parquet"
    return path, export_labels(settings, path)


def count_labels(settings: Settings) -> int:
    """The rows a snapshot would have now, the same trusted way."""
    from emostream.stream.web.endpoint import count_training_labels

    dsn, endpoint = _labels_source(settings)
    return endpoint.count_training_labels() if endpoint is not None else count_training_labels(dsn)


def snapshot_records(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """The columns of a labels snapshot (Parquet), row by row, read a batch at a time (not all at once)."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=16_384, columns=list(columns)):
        try:
            values = [batch.column(name).to_pylist() for name in columns]
        except UnicodeDecodeError:  # a String in ClickHouse holds bytes; emostream only ever writes UTF-8
            raise UsageError(
                "a label's tweet_id or text in ClickHouse is not valid UTF-8: fix or delete that row"
            ) from None
        yield from zip(*values, strict=True)


def write_labels_csv(snapshot: Path, handle: IO[str], with_ids: bool) -> int:
    """The snapshot as the CSV `emostream labels` prints (``text,label``, or with ``tweet_id`` first)."""
    from emostream.streaming_commands import csv_writer

    columns = ("tweet_id", "text", "label") if with_ids else ("text", "label")
    writerow = csv_writer(handle)
    writerow(columns)
    n = 0
    for row in snapshot_records(snapshot, columns):
        writerow(row)
        n += 1
    return n


def run_round(settings: Settings, labels_file: Path | None) -> Any:
    """Snapshot the labels (unless a file is given), train, judge, publish; print what was decided."""
    from emostream.model.registry import ModelRegistry
    from emostream.trainer.data import ColumnMap, load_emotion
    from emostream.trainer.retrain import RetrainPolicy, retrain

    policy = RetrainPolicy(
        holdout=settings.retrain_holdout,
        margin=settings.retrain_margin,
        tolerance=settings.retrain_tolerance,
        epochs=settings.retrain_epochs,
        learning_rate=settings.retrain_learning_rate,
        replay=settings.retrain_replay,
        review_weight=settings.retrain_review_weight,
        batch_size=settings.batch_size,
        warmup_ratio=settings.warmup_ratio,
        weight_decay=settings.weight_decay,
        max_length=settings.max_length,
        seed=settings.seed,
    )
    registry = ModelRegistry(settings.registry)
    champion = registry.require_current()
    with tempfile.TemporaryDirectory(prefix="emostream-labels-") as scratch:
        if labels_file is None:
            labels_file, n = export_snapshot(settings, Path(scratch))
            err.print(f"snapshot of {n:,} labels from ClickHouse")
        base = load_emotion(settings.data, ColumnMap(settings.text_column, settings.label_column), settings.seed)
        err.print(
            f"retraining {champion.name} for {policy.epochs:g} epochs on reviewed tweets and "
            f"{min(policy.replay, len(base['train'])):,} replayed base examples"
        )
        result = retrain(base, labels_file, registry, policy, data_source=settings.data)
    record = result.record
    scores = record["scores"]
    out.print(
        table(
            f"{result.version.name} from {record['parent']}: {record['labels']['trained_on']:,} reviewed tweets "
            f"trained on, {record['labels']['held_out']:,} held out ({result.training.seconds / 60:.1f} min)",
            ["model", "reviewed hold-out", "base test"],
            [
                [f"champion {record['parent']}", scores["champion"]["holdout"], scores["champion"]["base_test"]],
                [
                    f"challenger {result.version.name}",
                    scores["challenger"]["holdout"],
                    scores["challenger"]["base_test"],
                ],
            ],
        )
    )
    verdict = "promoted to current" if result.promoted else f"not promoted, {record['parent']} stays current"
    err.print(literal(f"{result.version.name}: {verdict} ({record['decision']['reason']})"))
    print(result.version.path.resolve())
    return result


@app.command()
def retrain(
    watch: Annotated[
        bool, typer.Option("--watch", help="keep running: start a round whenever enough new labels have arrived")
    ] = False,
    interval: Annotated[float, typer.Option(help="with --watch: seconds between looks at the label count")] = 30.0,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="a tweet_id,text,label CSV (or a Parquet snapshot) to use instead of ClickHouse's current labels"
        ),
    ] = None,
    data: Data = None,
    registry: Registry = None,
    clickhouse_dsn: Dsn = None,
    clickhouse_query_dsn: Annotated[str | None, setting("clickhouse_query_dsn")] = None,
    home: Home = None,
    retrain_holdout: Annotated[float | None, setting("retrain_holdout")] = None,
    retrain_margin: Annotated[float | None, setting("retrain_margin")] = None,
    retrain_tolerance: Annotated[float | None, setting("retrain_tolerance")] = None,
    retrain_min_labels: Annotated[int | None, setting("retrain_min_labels")] = None,
    retrain_epochs: Annotated[float | None, setting("retrain_epochs")] = None,
    retrain_learning_rate: Annotated[float | None, setting("retrain_learning_rate")] = None,
    retrain_replay: Annotated[int | None, setting("retrain_replay")] = None,
    retrain_review_weight: Annotated[int | None, setting("retrain_review_weight")] = None,
    seed: Annotated[int | None, setting("seed")] = None,
) -> None:
    """Train a challenger on the reviewers' labels; promote it only if it beats the current model.

    The challenger continues from the current model on the reviewed tweets (but a fixed hold-out of
    them) mixed with a replay of the base training data. It is promoted when it gains
    --retrain-margin on the held-out reviewed tweets and loses at most --retrain-tolerance on the base
    test split; either way it is kept in the registry with its lineage (retrain.json). Prints the new
    version's directory last.
    """
    settings = settings_from(locals())
    if labels is not None and watch:
        raise UsageError("--labels and --watch do not go together: --watch reads the labels from ClickHouse")
    if labels is not None and not labels.is_file():
        raise UsageError(f"--labels: {labels} is not a file")
    if not watch:
        with one_round_at_a_time(settings.registry, wait=False):
            run_round(settings, labels)
        return
    watch_labels(settings, interval)


def watch_labels(settings: Settings, interval: float, sleep: Any = time.sleep) -> None:
    """The offline job: a round whenever --retrain-min-labels new labels have arrived since the last one.

    It outlives any round it cannot run and any outage: the error is logged and the job waits. A round
    that failed on the labels themselves (a bad snapshot, too few to hold out, any error that is not an
    outage) is tried again once the label count has changed; an outage (ClickHouse, the endpoint, the
    disk) after the interval. Ctrl-C (KeyboardInterrupt) stops it.
    """
    from emostream.model.registry import ModelRegistry
    from emostream.stream.clickhouse.sql import SqlError
    from emostream.trainer.retrain import labels_since_last_round

    registry = ModelRegistry(settings.registry)
    err.print(
        f"watching the review labels every {interval:g} s; a round starts at {settings.retrain_min_labels:,} new "
        "labels (Ctrl-C stops)"
    )
    outages = (OSError, SqlError)  # ClickHouse, the endpoint, the network, the disk
    failed_at: int | None = None  # the label count at which a round failed on its data: wait for it to change
    while True:
        try:
            seen, now = labels_since_last_round(registry), count_labels(settings)
        except Exception as exc:
            _watch_warning("cannot count the labels", exc, f"trying again in {interval:g} s")
        else:
            if now - seen >= settings.retrain_min_labels and now != failed_at:
                err.print(f"{now - seen:,} new labels since the last round: starting one")
                try:
                    with one_round_at_a_time(settings.registry, wait=True):
                        run_round(settings, None)
                    failed_at = None
                except Exception as exc:
                    if isinstance(exc, outages):
                        failed_at = None
                        _watch_warning("the round stopped", exc, f"trying again in {interval:g} s")
                    else:
                        failed_at = now
                        _watch_warning(
                            "the round could not run", exc, f"trying again once new labels arrive (now {now:,})"
                        )
        sleep(interval)


def _watch_warning(what: str, exc: Exception, then: str) -> None:
    """One line on stderr; the exception's text (ClickHouse's, a file's) printed literally, never as markup."""
    from rich.text import Text

    from emostream.model.registry import RegistryError
    from emostream.stream.clickhouse.sql import SqlError
    from emostream.trainer.data import DataError
    from emostream.trainer.retrain import RetrainError

    known = isinstance(exc, DataError | RetrainError | SqlError | UsageError | RegistryError)
    message = str(exc) if known else f"{type(exc).__name__}: {exc}"
    err.print(
        Text.assemble(("retrain --watch: ", "yellow"), f"{what}: ", literal(message, newlines=False), f"; {then}")
    )


def _review_service(settings: Settings, url: str | None) -> tuple[str, str]:
    """The review API's address and a credential: given, or the running `up`'s (embedded mode)."""
    from emostream.stream.clickhouse.sink import chdb_path
    from emostream.stream.web.endpoint import Endpoint

    secret = settings.review_token or settings.web_token
    if url is not None:
        if secret is None:
            raise UsageError("--url needs a credential: set EMOSTREAM_REVIEW_TOKEN (or EMOSTREAM_WEB_TOKEN)")
        return url, secret.get_secret_value()
    directory = chdb_path(settings.resolved_clickhouse_dsn())
    endpoint = Endpoint.find(directory) if directory else None
    if endpoint is None:
        raise UsageError(
            "no review service found: start `emostream up` (embedded), or give --url of `emostream review` "
            "with EMOSTREAM_REVIEW_TOKEN set"
        )
    return endpoint.url, secret.get_secret_value() if secret else endpoint.token


@review_app.command("simulate")
def simulate(
    answers: Annotated[
        Path, typer.Option(help="CSV/TSV of gold labels: a label column and an id, tweet_id or text column")
    ],
    budget: Annotated[int, typer.Option(min=1, help="most labels to give")] = 100,
    reviewer: Annotated[
        str | None,
        typer.Option(
            help="the reviewer name you expect the labels under. It cannot choose one: the server binds the "
            "name to the credential (EMOSTREAM_REVIEWER of the server, for the shared tokens); given, the run "
            "stops before labelling anything if the server's name is another"
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="the review service (`emostream review`); default: the running `up`")
    ] = None,
    clickhouse_dsn: Dsn = None,
    home: Home = None,
) -> None:
    """Simulated reviewers, for demos and measurement only: answer pending review items from a file of
    gold labels, through the same authenticated HTTP API the page uses; items the file does not know are
    skipped. The labels land like people's: on tweets.labels and in review_labels, under the reviewer
    name the server binds to the credential."""
    from emostream.stream.review.simulate import Answers, ReviewClient
    from emostream.stream.review.simulate import simulate as run_simulation

    settings = settings_from(locals())
    known = Answers.read(answers)
    address, token = _review_service(settings, url)
    client = ReviewClient(address, token)
    name = client.reviewer()
    if reviewer is not None and reviewer.strip() != name:
        raise UsageError(
            f"--reviewer {reviewer!r}: the review service gives this credential's labels the name {name!r} "
            "(its EMOSTREAM_REVIEWER); a client cannot choose another. Nothing was labelled"
        )
    from tqdm import tqdm

    with tqdm(total=budget, desc="labelling", unit="label", disable=None) as bar:
        report = run_simulation(client, known, budget, bar.update)
    out.print(
        table(
            f"{report.labelled:,} labels given as {name!r}; {report.skipped:,} items skipped, not in {answers.name}",
            ["label", "given"],
            sorted(report.per_label.items()),
        )
    )
