"""The review loop's commands: `retrain` (once or as the watching job) and `review simulate`, and the
CSV that `emostream labels` prints of the reviewers' labels.

Shells over the library: the retraining job itself (the labels out of ClickHouse on a trusted path, one
round, the watch loop) is ``emostream.retraining``, the snapshot's format ``emostream.schemas.labels``,
and the lock that keeps rounds apart the registry's (``ModelRegistry.retrain_lock``). What is here: the
options, the settings a round is given, the printed results, and which errors exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from emostream import retraining
from emostream.cli_common import Data, Dsn, Home, Registry, UsageError, app, setting, settings_from
from emostream.console import err, literal, out, table
from emostream.settings import Settings
from emostream.streaming_commands import review_app

if TYPE_CHECKING:
    from emostream.stream.review.simulate import Answers
    from emostream.trainer.retrain import RetrainResult


def export_labels(settings: Settings, path: Path) -> int:
    """The reviewers' current labels as a Parquet snapshot at ``path``, from the writer's ClickHouse; its rows.

    :func:`emostream.retraining.export_labels` for `emostream labels` (in streaming_commands), with
    ``LabelsUnavailable`` (no ClickHouse data yet) as a UsageError.
    """
    try:
        return retraining.export_labels(settings.clickhouse(), path)
    except retraining.LabelsUnavailable as exc:
        raise UsageError(str(exc)) from None


def write_labels_csv(snapshot: Path, handle: IO[str], with_ids: bool) -> int:
    """The snapshot as the CSV `emostream labels` prints (``text,label``, or with ``tweet_id`` first)."""
    from emostream.schemas.labels import SNAPSHOT_COLUMNS, SnapshotError, snapshot_records
    from emostream.streaming_commands import csv_writer

    columns = SNAPSHOT_COLUMNS if with_ids else tuple(name for name in SNAPSHOT_COLUMNS if name != "tweet_id")
    writerow = csv_writer(handle)
    writerow(columns)
    n = 0
    try:
        for row in snapshot_records(snapshot, columns):
            writerow(row)
            n += 1
    except SnapshotError:  # emostream only ever writes UTF-8 there; a row written another way may not be
        raise UsageError(
            "a label's tweet_id or text in ClickHouse is not valid UTF-8: fix or delete that row"
        ) from None
    return n


def _retrain_job(settings: Settings) -> retraining.RetrainJob:
    """What a round works with, from the settings: the registry, the writer's DSN, the base data, the policy."""
    from emostream.trainer.data import ColumnMap

    return retraining.RetrainJob(
        registry=settings.registry,
        dsn=settings.clickhouse(),
        data=tuple(settings.data),
        columns=ColumnMap(settings.text_column, settings.label_column),
        policy=settings.retrain_policy(),
    )


def _print_round(result: RetrainResult) -> None:
    """What a round decided: both models' scores (stdout), the verdict (stderr), the new version's directory last."""
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
    retrain_interpolate: Annotated[
        bool | None, setting("retrain_interpolate", "--retrain-interpolate/--no-retrain-interpolate")
    ] = None,
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
    job = _retrain_job(settings)
    if watch:  # until Ctrl-C: it logs what fails and waits
        retraining.watch_labels(job, settings.retrain_min_labels, interval, _print_round)
        return
    try:
        result = retraining.run_round(job, labels)
    except retraining.LabelsUnavailable as exc:  # no ClickHouse data here yet
        raise UsageError(str(exc)) from None
    _print_round(result)


def _review_service(settings: Settings, url: str | None) -> tuple[str, str]:
    """The review API's address and a credential: given, or the running `up`'s (embedded mode)."""
    from emostream.stream.web.endpoint import Endpoint

    secret = settings.review_token or settings.web_token
    if url is not None:
        if secret is None:
            raise UsageError("--url needs a credential: set EMOSTREAM_REVIEW_TOKEN (or EMOSTREAM_WEB_TOKEN)")
        return url, secret.get_secret_value()
    directory = settings.clickhouse().directory
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
    team: Annotated[
        str | None,
        typer.Option(
            help="simulated named reviewers and how often each answers wrong, e.g. kim:0.1,lee:0.2,max:0.35: "
            "added with personal tokens (the operator's credential: the running `up`'s, or EMOSTREAM_WEB_TOKEN "
            "with --url; an existing one of the name is given a new token), taking turns until --budget labels "
            "are given in all"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="with --team: seed of the reviewers' errors")] = 0,
    clickhouse_dsn: Dsn = None,
    home: Home = None,
) -> None:
    """Simulated reviewers, for demos and measurement only: answer pending review items from a file of
    gold labels, through the same authenticated HTTP API the page uses; items the file does not know are
    skipped. The labels land like people's: on tweets.labels and in review_labels, under the reviewer
    name the server binds to the credential. With --team, several named reviewers who make mistakes."""
    from emostream.stream.review.simulate import Answers, ReviewClient
    from emostream.stream.review.simulate import simulate as run_simulation

    settings = settings_from(locals())
    known = Answers.read(answers)
    if team is not None:
        if reviewer is not None:
            raise UsageError("--reviewer and --team do not go together: each team member has their own name")
        _simulate_team(settings, url, known, _team(team), budget, seed)
        return
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


def _team(spec: str) -> list[tuple[str, float]]:
    """``kim:0.1,lee:0.2`` as (name, error rate) pairs; a rate outside 0-1 or a repeated name is a UsageError."""
    members: list[tuple[str, float]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rate = part.rpartition(":")
        try:
            error = float(rate)
        except ValueError:
            raise UsageError(f"--team: {part!r} is not NAME:ERROR_RATE (e.g. kim:0.1)") from None
        if not name.strip() or not 0 <= error <= 1:
            raise UsageError(f"--team: {part!r}: a name and an error rate from 0 to 1")
        if name.strip() in {n for n, _ in members}:
            raise UsageError(f"--team: {name.strip()!r} is named twice")
        members.append((name.strip(), error))
    if not members:
        raise UsageError("--team: give at least one NAME:ERROR_RATE")
    return members


def _operator(settings: Settings, url: str | None) -> tuple[str, str]:
    """The review API's address and the operator's credential (to add the simulated reviewers)."""
    from emostream.stream.web.endpoint import Endpoint

    if url is not None:
        if settings.web_token is None:
            raise UsageError("--team with --url needs the operator's credential: set EMOSTREAM_WEB_TOKEN")
        return url, settings.web_token.get_secret_value()
    directory = settings.clickhouse().directory
    endpoint = Endpoint.find(directory) if directory else None
    if endpoint is None:
        raise UsageError("no review service found: start `emostream up`, or give --url with EMOSTREAM_WEB_TOKEN set")
    return endpoint.url, endpoint.token


def _simulate_team(
    settings: Settings, url: str | None, known: Answers, members: list[tuple[str, float]], budget: int, seed: int
) -> None:
    import random

    from tqdm import tqdm

    from emostream.stream.clickhouse.sql import SqlError
    from emostream.stream.review.simulate import NoisyReviewer, ReviewClient, simulate_team
    from emostream.stream.web.endpoint import Endpoint

    address, token = _operator(settings, url)
    operator = Endpoint(address, token)
    reviewers = []
    for i, (name, error) in enumerate(members):
        try:
            listed = {r["name"]: r for r in operator.api("GET", "/review/api/reviewers")["reviewers"]}
            if name in listed and not listed[name]["revoked"]:
                operator.api("POST", "/review/api/reviewers/revoke", {"name": name})
            added = operator.api("POST", "/review/api/reviewers", {"name": name})
        except SqlError as exc:
            raise UsageError(f"--team {name!r}: {exc}") from None
        client = ReviewClient(address, added["token"])
        reviewers.append(NoisyReviewer(client, error, random.Random(seed * 1000 + i)))
    with tqdm(total=budget, desc="labelling", unit="label", disable=None) as bar:
        reports = simulate_team(reviewers, known, budget, progress=bar.update)
    out.print(
        table(
            f"{sum(r.labelled for r in reports):,} labels given by {len(reports)} simulated reviewers",
            ["reviewer", "error rate", "labels", "wrong", "skipped"],
            [
                [name, error, report.labelled, report.wrong, report.skipped]
                for (name, error), report in zip(members, reports, strict=True)
            ],
        )
    )
