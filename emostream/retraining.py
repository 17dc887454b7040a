"""The retraining job: the reviewers' labels out of ClickHouse, a round of training on them, and the watch.

The two halves of emostream meet here, on top of both, because neither imports the other. The labels
come out of ClickHouse on a trusted path (``emostream.stream.web.endpoint``: the running `up`'s
operator-only ``/labels`` route in the embedded mode, where `up` owns the chDB directory, else a client of
our own on the writer's DSN; never user SQL, whose row limit would cut the snapshot), and
``emostream.trainer.retrain`` turns a snapshot of them (Parquet, ``emostream.schemas.labels``) into a
challenger, published to the registry and promoted only if it beats the champion.

- :func:`export_labels`, :func:`export_snapshot`, :func:`count_labels`: the labels, as a file or a count;
- :func:`run_round`: one round (``emostream retrain``), under the registry's retrain lock;
- :func:`watch_labels`: the offline job (``emostream retrain --watch``): a round whenever enough new labels
  have arrived, outliving any round it cannot run.

What a round is given (registry, DSN, base data, policy) is a :class:`RetrainJob`; the command line builds
it from the settings. Progress goes to stderr (``emostream.console.err``); the caller reports a round's
result. Torch, datasets and clickhouse-connect load inside the functions, not with this module.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emostream.console import err, literal
from emostream.stream.clickhouse.dsn import ClickHouseDsn

if TYPE_CHECKING:
    from emostream.stream.web.endpoint import Endpoint
    from emostream.trainer.data import ColumnMap
    from emostream.trainer.retrain import RetrainPolicy, RetrainResult


class LabelsUnavailable(RuntimeError):
    """There is no ClickHouse to read the labels from: the embedded mode's data directory does not exist yet."""


@dataclass(frozen=True)
class RetrainJob:
    """What a round works with: the registry it trains for, the writer's ClickHouse DSN (where the labels
    are), the base training data with its columns (the replay and the base test split), and the policy.

    ``data`` is one source or several (``Settings.data``): the replay draws from every source's train
    split, validation is all of theirs, and the base test split (the tolerance) is the first source's."""

    registry: Path
    dsn: ClickHouseDsn | str
    data: str | Sequence[str]
    columns: ColumnMap
    policy: RetrainPolicy

    @property
    def sources(self) -> list[str]:
        """``data`` as a list (one text is one source, never split into characters)."""
        return [self.data] if isinstance(self.data, str) else list(self.data)


def _labels_endpoint(dsn: ClickHouseDsn) -> Endpoint | None:
    """The running `up`'s endpoint when one owns the DSN's chDB directory, else None (read with a client)."""
    from emostream.stream.web.endpoint import Endpoint

    directory = dsn.directory
    endpoint = Endpoint.find(directory) if directory else None
    if endpoint is None and directory is not None and not directory.exists():
        raise LabelsUnavailable(
            f"{directory}: no ClickHouse data here yet; start `emostream up` or set EMOSTREAM_CLICKHOUSE_DSN"
        )
    return endpoint


def export_labels(dsn: ClickHouseDsn | str, path: Path) -> int:
    """The reviewers' current labels (``TRAINING_LABELS_WITH_IDS``) as a Parquet file at ``path``; its rows.

    Trusted, not user SQL: through the running `up`'s ``/labels`` route (it owns the chDB directory), or a
    client of our own on the writer's DSN (no `up`, or a ClickHouse server). No row limit applies.
    """
    from emostream.stream.web.endpoint import export_training_labels

    where = ClickHouseDsn.of(dsn)
    endpoint = _labels_endpoint(where)
    return endpoint.training_labels(path) if endpoint is not None else export_training_labels(where, path)


def export_snapshot(dsn: ClickHouseDsn | str, directory: Path) -> tuple[Path, int]:
    """A snapshot of the reviewers' current labels, written to a new Parquet file in ``directory``; its rows."""
    path = directory / f"review_labels-{time.strftime('%Y%m%dT%H%M%S')}.parquet"
    return path, export_labels(dsn, path)


def count_labels(dsn: ClickHouseDsn | str) -> int:
    """The rows a snapshot would have now, read the same trusted way."""
    from emostream.stream.web.endpoint import count_training_labels

    where = ClickHouseDsn.of(dsn)
    endpoint = _labels_endpoint(where)
    return endpoint.count_training_labels() if endpoint is not None else count_training_labels(where)


def run_round(job: RetrainJob, labels_file: Path | None = None, wait: bool = False) -> RetrainResult:
    """One round: snapshot the labels (unless a file is given), train a challenger, judge it, publish it.

    It runs under the registry's retrain lock: refused with ``RetrainBusy`` while another round holds it,
    or, with ``wait``, once that round is done. A snapshot taken here lives in a scratch directory for the
    round (``trainer.retrain`` keeps a copy beside the new version). Notes on stderr what it trains on.
    """
    from emostream.model.registry import ModelRegistry
    from emostream.trainer.data import load_sources
    from emostream.trainer.retrain import retrain

    registry = ModelRegistry(job.registry)
    policy = job.policy
    with registry.retrain_lock(wait=wait):
        champion = registry.require_current()
        with tempfile.TemporaryDirectory(prefix="emostream-labels-") as scratch:
            if labels_file is None:
                labels_file, n = export_snapshot(job.dsn, Path(scratch))
                err.print(f"snapshot of {n:,} labels from ClickHouse")
            base = load_sources(job.sources, job.columns, policy.seed).dataset
            err.print(
                f"retraining {champion.name} for {policy.retrain_epochs:g} epochs on reviewed tweets and "
                f"{min(policy.retrain_replay, len(base['train'])):,} replayed base examples"
            )
            return retrain(base, labels_file, registry, policy, data_source=os.pathsep.join(job.sources))


def watch_labels(
    job: RetrainJob,
    min_labels: int,
    interval: float,
    report: Callable[[RetrainResult], object],
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """The offline job: a round (given to ``report``) whenever ``min_labels`` new labels have arrived since
    the last one (the rows of the newest round's snapshot, from the registry's lineage).

    It outlives any round it cannot run and any outage: the error is logged and the job waits. A round
    that failed on the labels themselves (a bad snapshot, too few to hold out, any error that is not an
    outage) is tried again once the label count has changed; an outage (ClickHouse, the endpoint, the
    disk) after the interval. A round waits for one that is running already. Ctrl-C (KeyboardInterrupt)
    stops it; it never returns otherwise.
    """
    from emostream.model.registry import ModelRegistry
    from emostream.stream.clickhouse.sql import SqlError
    from emostream.trainer.retrain import labels_since_last_round

    registry = ModelRegistry(job.registry)
    err.print(
        f"watching the review labels every {interval:g} s; a round starts at {min_labels:,} new labels (Ctrl-C stops)"
    )
    outages = (OSError, SqlError)  # ClickHouse, the endpoint, the network, the disk
    failed_at: int | None = None  # the label count at which a round failed on its data: wait for it to change
    while True:
        try:
            seen, now = labels_since_last_round(registry), count_labels(job.dsn)
        except Exception as exc:
            _watch_warning("cannot count the labels", exc, f"trying again in {interval:g} s")
        else:
            if now - seen >= min_labels and now != failed_at:
                err.print(f"{now - seen:,} new labels since the last round: starting one")
                try:
                    report(run_round(job, None, wait=True))
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

    known = isinstance(exc, DataError | RetrainError | SqlError | LabelsUnavailable | RegistryError)
    message = str(exc) if known else f"{type(exc).__name__}: {exc}"
    err.print(
        Text.assemble(("retrain --watch: ", "yellow"), f"{what}: ", literal(message, newlines=False), f"; {then}")
    )
