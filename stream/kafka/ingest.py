"""Getting tweets onto the ``tweets`` topic: from JSONL/CSV files or stdin, or replayed from the data set.

The producer is idempotent with acks=all, so a retried send never duplicates a record and a send that
returned is on every in-sync replica. Each record's key is the tweet id, so a tweet always lands on the
same partition and re-sending it is harmless downstream (the sink is idempotent on the id).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from tqdm.auto import tqdm

from emostream.schemas import Tweet, describe_errors

OnError = Literal["skip", "fail"]
log = logging.getLogger("emostream.ingest")


class IngestError(ValueError):
    """A bad input line under ``--on-error fail``."""


@dataclass(frozen=True)
class FieldMap:
    """Which input field holds each Tweet field (CSV column or JSON key)."""

    id: str = "id"
    text: str = "text"
    created_at: str = "created_at"
    brand: str = "brand"
    author: str = "author"
    lang: str = "lang"
    source: str = "source"

    def apply(self, record: dict) -> dict:
        """``record`` as Tweet fields: each one renamed from its input field, left out where missing, None or ""."""
        return {name: record[key] for name, key in self.__dict__.items() if record.get(key) not in (None, "")}


@dataclass
class IngestReport:
    """What :func:`produce` did: tweets sent, bad lines skipped (line number, reason), seconds it took."""

    sent: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0


def read_tweets(source: str, fields: FieldMap, fmt: str | None = None) -> Iterator[tuple[int, Tweet | str]]:
    """(line number, Tweet or the reason it is bad) for each record of a JSONL or CSV file, or stdin (``-``)."""
    kind = fmt or ("csv" if Path(source).suffix.lower() in (".csv", ".tsv") else "jsonl")
    with open(sys.stdin.fileno(), "rb", closefd=False) if source == "-" else open(source, "rb") as stream:
        if kind == "csv":
            yield from _csv_tweets(stream, fields, "\t" if source.endswith(".tsv") else ",")
        else:
            yield from _jsonl_tweets(stream, fields)


def _jsonl_tweets(stream: BinaryIO, fields: FieldMap) -> Iterator[tuple[int, Tweet | str]]:
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, f"not UTF-8: {exc.reason} at byte {exc.start}"
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON: {exc.msg}"
            continue
        yield number, _validate(record, fields)


def _csv_tweets(stream: BinaryIO, fields: FieldMap, delimiter: str) -> Iterator[tuple[int, Tweet | str]]:
    raw = stream.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield raw[: exc.start].count(b"\n") + 1, f"not UTF-8: {exc.reason}"
        return
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    number = 2
    for record in reader:
        yield number, _validate(record, fields)
        number = reader.line_num + 1


def _validate(record: object, fields: FieldMap) -> Tweet | str:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    try:
        return Tweet.model_validate(fields.apply(record))
    except ValidationError as exc:
        return describe_errors(exc)


def replay_tweets(texts: list[str], split: str, brands: list[str], run_id: str, seed: int = 0) -> Iterator[Tweet]:
    """The data set's tweets as a live brand-mention stream: ids, brands, and timestamps of now."""
    rng = random.Random(seed)
    for i, text in enumerate(texts):
        yield Tweet(
            id=f"{run_id}-{split}-{i:05d}",
            text=text,
            brand=rng.choice(brands),
            source=f"replay:{split}",
            lang="en",
            created_at=datetime.now(UTC),
        )


async def start_producer(bootstrap: str, linger_ms: int = 5, refusal_level: int = logging.WARNING) -> AIOKafkaProducer:
    """An idempotent acks=all producer, or a plain acks=all one where the broker cannot do idempotence.

    The embedded broker (tansu) answers InitProducerId with an error; there a retried send may repeat a
    record, which the idempotent sink (ReplacingMergeTree on tweet id) absorbs anyway. ``refusal_level``:
    how loudly to say so (a service that starts with every ``up`` says it at INFO).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms)
    sender_log = logging.getLogger("aiokafka.producer.sender")
    level = sender_log.level
    sender_log.setLevel(logging.CRITICAL)  # the refusal is expected and reported below, once
    try:
        await producer.start()
        return producer
    except KafkaConnectionError:
        await producer.stop()
        raise
    except KafkaError as exc:
        await producer.stop()
        log.log(
            refusal_level, "the broker refused an idempotent producer (%s); using acks=all without idempotence", exc
        )
    finally:
        sender_log.setLevel(level)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms)
    await producer.start()
    return producer


async def produce(
    bootstrap: str,
    topic: str,
    tweets: Iterable[tuple[int, Tweet | str]],
    *,
    rate: float = 0.0,
    on_error: OnError = "skip",
    total: int | None = None,
    progress: bool = True,
) -> IngestReport:
    """Send tweets (keyed by id) at up to ``rate`` per second (0: as fast as possible)."""
    report = IngestReport()
    producer = await start_producer(bootstrap)
    started = time.monotonic()
    pending: list[asyncio.Future] = []
    try:
        with tqdm(total=total, unit="tweet", desc=f"→ {topic}", disable=not progress) as bar:
            for number, item in tweets:
                if isinstance(item, str):
                    if on_error == "fail":
                        raise IngestError(f"line {number}: {item}")
                    report.bad.append((number, item))
                    continue
                if rate > 0:
                    wait = started + report.sent / rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                pending.append(await producer.send(topic, item.model_dump_json().encode(), key=item.id.encode()))
                report.sent += 1
                bar.update(1)
                if len(pending) >= 1000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    report.seconds = time.monotonic() - started
    return report
