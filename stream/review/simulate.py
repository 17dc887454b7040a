"""Simulated reviewers: answer the review queue from a file of gold labels, for demos and measurement.

They go through the same authenticated HTTP API the page uses (``Authorization: Bearer``), in the
queue's order: the next items, a label for each one the file knows (by tweet id, else by its text), a
skip for each it does not; each label and skip names the item by its id and the hash of the text it was
shown (``text_sha256``), as the page does. So the labels land exactly as people's would: on
``tweets.labels`` and in ``review_labels``, with the same leases, and the review loop can be measured
without people. Nothing here is a reviewer's judgement: it exists for demos and benchmarks.

A team of them (:func:`simulate_team`): named reviewers taking turns, each wrong a set share of the time
(:class:`NoisyReviewer`), to measure what overlap, adjudication by agreement and gold questions buy when
people make mistakes.

The reviewer name the labels are given under is the server's: it binds the name to the credential (with
the shared review token, ``EMOSTREAM_REVIEWER`` of the server), and no request can choose another.
``ReviewClient.reviewer()`` asks the server which name that is.
"""

from __future__ import annotations

import csv
import json
import random
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emostream.schemas import LABELS, NO_EMOTION

WINDOW = 50


class SimulationError(RuntimeError):
    """The answers file or the review service cannot be used."""


@dataclass(frozen=True)
class Answers:
    """Gold labels to answer with, by tweet id and by (stripped) text; read from a file by :meth:`read`."""

    by_id: dict[str, str]
    by_text: dict[str, str]

    def answer(self, item: dict[str, Any]) -> str | None:
        """The item's gold label, by its id first, else by its text; None when the file knows neither."""
        return self.by_id.get(str(item["tweet_id"])) or self.by_text.get(str(item["text"]).strip())

    @classmethod
    def read(cls, path: Path) -> Answers:
        """A CSV or TSV (by its suffix) with a header: ``label`` and ``id`` or ``tweet_id`` and/or ``text``."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise SimulationError(f"{path}: cannot read the answers ({exc.strerror})") from None
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = set(reader.fieldnames or ())
        id_column = next((c for c in ("tweet_id", "id") if c in columns), None)
        if "label" not in columns or (id_column is None and "text" not in columns):
            raise SimulationError(f"{path}:1: expected a label column and an id, tweet_id or text column")
        by_id, by_text = {}, {}
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip()
            if label not in (*LABELS, NO_EMOTION):
                raise SimulationError(f"{path}:{line}: label: {label!r} is not one of {', '.join(LABELS)} or none")
            if id_column and row[id_column]:
                by_id[row[id_column].strip()] = label
            if row.get("text"):
                by_text[row["text"].strip()] = label
        return cls(by_id, by_text)


@dataclass
class ReviewClient:
    """The review API, as a program uses it. The server decides the reviewer name (see :meth:`reviewer`)."""

    url: str
    token: str
    timeout: float = 60.0

    def reviewer(self) -> str:
        """The name the server gives this credential's labels."""
        return str(self._call("GET", "/review/api/session")["reviewer"])

    def items(self, n: int = WINDOW) -> list[dict[str, Any]]:
        """This credential's next window of up to ``n`` items, leased to it as the page's would be."""
        items: list[dict[str, Any]] = self._call("GET", f"/review/api/items?n={n}")["items"]
        return items

    def label(self, item: dict[str, Any], label: str) -> None:
        """Label the item as it was shown (its id and text hash); an HTTP refusal raises ``SimulationError``."""
        self._call("POST", "/review/api/label", {**_ref(item), "label": label})

    def skip(self, item: dict[str, Any]) -> None:
        """Skip the item: the service gives it up and keeps it out of this credential's queue for a while."""
        self._call("POST", "/review/api/skip", _ref(item))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                **({"Content-Type": "application/json"} if body is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError):
                reason = exc.reason
            raise SimulationError(f"{method} {path}: HTTP {exc.code}: {reason}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise SimulationError(f"the review service at {self.url} did not answer: {exc}") from None


def _ref(item: dict[str, Any]) -> dict[str, str]:
    return {"tweet_id": str(item["tweet_id"]), "text_sha256": str(item["text_sha256"])}


@dataclass
class SimulationReport:
    """What a run did: labels given (in all and per label) and distinct items skipped."""

    labelled: int = 0
    skipped: int = 0
    per_label: Counter[str] = field(default_factory=Counter)
    wrong: int = 0  # labels other than the answers file's (a noisy reviewer's errors)


@dataclass
class NoisyReviewer:
    """A simulated reviewer who answers wrong ``error`` of the time: that share of their answers replaced by
    another label, drawn uniformly from the six emotions and ``none`` other than the right one (seeded, so a
    run can be repeated). ``error = 0`` answers exactly as the file says."""

    client: ReviewClient
    error: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    report: SimulationReport = field(default_factory=lambda: SimulationReport())
    skipped: set[tuple[str, str]] = field(default_factory=set)
    done: bool = False  # nothing left for this one

    def answer(self, truth: str) -> str:
        """The label this reviewer gives an item whose right label is ``truth``."""
        if self.rng.random() >= self.error:
            return truth
        wrong: str = self.rng.choice([name for name in (*LABELS, NO_EMOTION) if name != truth])
        return wrong


def simulate_team(
    reviewers: list[NoisyReviewer],
    answers: Answers,
    budget: int,
    window: int = 10,
    progress: Callable[[int], object] | None = None,
) -> list[SimulationReport]:
    """Several reviewers taking turns, a window of up to ``window`` items each, until ``budget`` labels are
    given in all or none of them has anything left. With several opinions per item the next reviewer's
    window holds what the last one labelled (it wants their opinion too), as a team's queue does."""
    given = 0
    while given < budget and not all(r.done for r in reviewers):
        for reviewer in reviewers:
            if reviewer.done or given >= budget:
                continue
            labelled = _work_through(reviewer, answers, min(window, budget - given), progress)
            reviewer.done = labelled == 0
            given += labelled
    return [r.report for r in reviewers]


def _work_through(
    reviewer: NoisyReviewer, answers: Answers, budget: int, progress: Callable[[int], object] | None
) -> int:
    """One window of one reviewer: label what the answers know (with the reviewer's errors), skip the rest."""
    items = reviewer.client.items(max(budget, 1))
    labelled = 0
    for item in items:
        ref = (str(item["tweet_id"]), str(item["text_sha256"]))
        truth = answers.answer(item)
        if truth is None:
            if ref not in reviewer.skipped:
                reviewer.client.skip(item)
                reviewer.skipped.add(ref)
                reviewer.report.skipped += 1
            continue
        label = reviewer.answer(truth)
        reviewer.client.label(item, label)
        labelled += 1
        reviewer.report.labelled += 1
        reviewer.report.per_label[label] += 1
        reviewer.report.wrong += label != truth
        if progress is not None:
            progress(1)
        if labelled >= budget:
            break
    return labelled


def simulate(
    client: ReviewClient, answers: Answers, budget: int, progress: Callable[[int], object] | None = None
) -> SimulationReport:
    """Label pending items in the queue's order until ``budget`` labels are given or nothing is left.

    Items the answers do not know are skipped (the service then keeps them out of this reviewer's
    queue), so the loop moves on. The service remembers only so many skips (``emostream.stream.review.leases``),
    so a window that brings back nothing but items skipped already ends the run: the rest of the queue
    is unknown to the answers.
    """
    report = SimulationReport()
    skipped: set[tuple[str, str]] = set()
    while report.labelled < budget:
        items = client.items(WINDOW)
        if not items or all((item["tweet_id"], item["text_sha256"]) in skipped for item in items):
            break
        for item in items:
            answer = answers.answer(item)
            if answer is None:
                client.skip(item)
                report.skipped += (item["tweet_id"], item["text_sha256"]) not in skipped
                skipped.add((item["tweet_id"], item["text_sha256"]))
                continue
            client.label(item, answer)
            report.labelled += 1
            report.per_label[answer] += 1
            if progress is not None:
                progress(1)
            if report.labelled >= budget:
                break
    return report
