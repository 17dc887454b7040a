"""The retraining snapshot on the real engine: every string round-trips, no row limit, the operator-only route,
and a `retrain --watch` that outlives any round it cannot run."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from emostream.schemas import LABELS, ReviewItem, ReviewLabel, Tweet
from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.trainer.data import DataError
from emostream.trainer.retrain import ReviewedTweet, keep_snapshot, read_snapshot, snapshot_format
from tests.conftest import EMOSTREAM, run_cli
from tests.test_sink import scores

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
REVIEW_TOKEN = "review-" + uuid.uuid4().hex
# Each of these breaks a line-oriented reading somewhere (str.splitlines breaks at U+2028/9, 0x1c-0x1e,
# NEL, VT and FF; a CSV read line by line at a quoted CR or LF), or is quoting, or is not one UTF-16 unit.
SPECIAL = [
    "\u2028",
    "\u2029",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\x0b",
    "\x0c",
    "\r",
    "\r\n",
    "\n",
    "\n\n",
    '"',
    '""',
    ",",
    "\t",
    "\x00",
    "\x1b[31m",
    "😀",
    "👩‍👩‍👧",
    "[bold]x[/bold]",
    "é",
]
EMBEDDED = [f"before{c}after {i}" for i, c in enumerate(SPECIAL)] + [
    'a "quoted", comma\tand tab\nand a newline\r\nand CRLF\u2028and LS\x85and NEL',
    "x" * 200_000,  # longer than the csv module's default field limit (128 KiB)
]
BARE = [*SPECIAL, " ", "  \u2028 "]  # texts of nothing else: what the reviewer saw is what is kept


def queue(sink: ClickHouseSink, texts: list[str], prefix: str = "t", direct: bool = False) -> dict[str, str]:
    """Each text as a review item with a label; tweet_id -> text. The items go through the sink's own write,
    or (``direct``: texts a Tweet no longer accepts, such as blank ones, that an older queue may hold) are
    inserted as they are."""
    batch = [score.model_copy(update={"tweet_id": f"{prefix}{i:04d}"}) for i, score in enumerate(scores(len(texts)))]
    if direct:
        sink.client.insert(
            "review_queue",
            [[score.tweet_id, text, "v0001", "joy", "test"] for score, text in zip(batch, texts, strict=True)],
            column_names=["tweet_id", "text", "model_version", "label", "reason"],
        )
    else:
        items = [
            ReviewItem(tweet=Tweet(id=score.tweet_id, text=text), score=score, reason="test")
            for score, text in zip(batch, texts, strict=True)
        ]
        sink.write([item.score for item in items], reviews=items)
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    sink.write_labels(
        [
            ReviewLabel(
                tweet_id=score.tweet_id,
                label=LABELS[i % 6],
                reviewer="ana",
                labelled_at=start + timedelta(seconds=i),
                model_version="v0001",
                confidence=0.41,
            )
            for i, score in enumerate(batch)
        ]
    )
    return {score.tweet_id: text for score, text in zip(batch, texts, strict=True)}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Settings, ClickHouseSink]]:
    settings = Settings(home=tmp_path / "home", registry=tmp_path / "models")
    sink = ClickHouseSink(settings.resolved_clickhouse_dsn())
    sink.apply_schema()
    try:
        yield settings, sink
    finally:
        sink.close()


def test_every_string_round_trips_through_export_file_and_read_snapshot(
    engine: tuple[Settings, ClickHouseSink], tmp_path: Path
) -> None:
    from emostream.retraining import count_labels, export_snapshot

    settings, sink = engine
    written = queue(sink, EMBEDDED) | queue(sink, BARE, prefix="b", direct=True)
    dsn = settings.resolved_clickhouse_dsn()
    path, n = export_snapshot(dsn, tmp_path)  # no `up`: a trusted client of our own on the writer's DSN
    assert n == len(written) == count_labels(dsn)
    assert snapshot_format(path) == "parquet"
    rows = read_snapshot(path)
    assert {row.tweet_id: row.text for row in rows} == written  # exactly, character for character
    assert [row.tweet_id for row in rows] == sorted(written)


def test_lone_surrogates_cannot_reach_clickhouse(engine: tuple[Settings, ClickHouseSink]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"surrogate|unicode"):
        Tweet(id="s1", text="half a pair \ud83d")
    _, sink = engine
    with pytest.raises(UnicodeEncodeError):
        sink.client.insert("review_queue", [["s1", "half a pair \ud83d"]], column_names=["tweet_id", "text"])


def test_a_text_that_is_not_utf8_is_named_not_a_crash(engine: tuple[Settings, ClickHouseSink], tmp_path: Path) -> None:
    from emostream.retraining import export_snapshot

    settings, sink = engine
    queue(sink, ["fine"])
    sink.client.command("INSERT INTO review_queue (tweet_id, text) SELECT 'bytes', unhex('ff61')")  # not via emostream
    sink.client.command("INSERT INTO review_labels (tweet_id, label) VALUES ('bytes', 'joy')")
    path, _ = export_snapshot(settings.resolved_clickhouse_dsn(), tmp_path)
    with pytest.raises(DataError, match=r"row 1: text is not valid UTF-8"):
        read_snapshot(path)


N_LARGE = 120_000  # more than user SQL's max_result_rows (100,000)


def fill_large(sink: ClickHouseSink, n: int = N_LARGE) -> None:
    """One columnar insert per table."""
    ids = [f"big{i:06d}" for i in range(n)]
    sink.client.insert(
        "review_queue",
        [ids, [f"tweet {i}\u2028line two" for i in range(n)], ["v0001"] * n, ["joy"] * n, ["test"] * n],
        column_names=["tweet_id", "text", "model_version", "label", "reason"],
        column_oriented=True,
    )
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    sink.client.insert(
        "review_labels",
        [ids, [LABELS[i % 6] for i in range(n)], ["ana"] * n, [start] * n, ["v0001"] * n, [0.4] * n, [False] * n],
        column_names=["tweet_id", "label", "reviewer", "labelled_at", "model_version", "confidence", "retracted"],
        column_oriented=True,
    )


def test_more_labels_than_user_sql_returns_are_all_exported_and_read_back(
    engine: tuple[Settings, ClickHouseSink], tmp_path: Path
) -> None:
    from emostream.retraining import count_labels, export_snapshot

    settings, sink = engine
    assert settings.sql_max_rows < N_LARGE
    fill_large(sink)
    assert count_labels(settings.resolved_clickhouse_dsn()) == N_LARGE
    path, n = export_snapshot(settings.resolved_clickhouse_dsn(), tmp_path)
    rows = read_snapshot(path)
    assert n == len(rows) == N_LARGE
    assert rows[-1] == ReviewedTweet(f"big{N_LARGE - 1:06d}", f"tweet {N_LARGE - 1}\u2028line two", LABELS[5], "single")
    assert {row.label for row in rows} == set(LABELS)


# --- the operator-only route on the worker's web endpoint ---------------------------------------------------------


@contextmanager
def endpoint_serving(dsn: str) -> Iterator[tuple[str, list[str]]]:
    """The worker's web routes as `up` registers them (add_web_views, the guard), on a real aiohttp server;
    yields its URL and the paths it was asked for."""
    import faust
    from aiohttp import web

    from emostream.stream.clickhouse.dsn import ClickHouseDsn
    from emostream.stream.kafka.broker import free_port
    from emostream.stream.web.auth import ADMIN, REVIEW, RequestGuard
    from emostream.stream.web.views import add_web_views

    port = free_port("127.0.0.1")
    guard = RequestGuard({ADMIN: ADMIN_TOKEN, REVIEW: REVIEW_TOKEN}, "127.0.0.1", port)
    app = faust.App(f"emostream-test-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1")
    sql_thread = add_web_views(app, guard, None, 5.0, None, labels_dsn=ClickHouseDsn(dsn))  # type: ignore[arg-type]
    asked: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> Any:
        asked.append(request.path)
        return await handler(request)

    web_app = web.Application(middlewares=[record])
    app.on_webserver_init(SimpleNamespace(web_app=web_app))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web_app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
        sql_thread.shutdown()
        asyncio.run(app.on_before_shutdown.send())  # what the worker's stop does: the labels thread ends


def status_of(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_labels_route_opens_to_the_operator_only(engine: tuple[Settings, ClickHouseSink], tmp_path: Path) -> None:
    from emostream.stream.clickhouse.sql import SqlError
    from emostream.stream.web.endpoint import Endpoint

    settings, sink = engine
    written = queue(sink, EMBEDDED[:5])
    with endpoint_serving(settings.resolved_clickhouse_dsn()) as (url, _):
        for route in ("/labels", "/labels/count"):
            assert status_of(url + route, None) == 401, route
            assert status_of(url + route, "not-a-token") == 401, route
            assert status_of(url + route, REVIEW_TOKEN) == 403, route  # a reviewer's credential opens /review only
            assert status_of(url + route, ADMIN_TOKEN) == 200, route
        with pytest.raises(SqlError, match="review credential does not open /labels"):
            Endpoint(url, REVIEW_TOKEN).training_labels(tmp_path / "refused.parquet")
        assert not list(tmp_path.glob("*refused*"))  # nothing left behind
        with pytest.raises(SqlError, match="missing or wrong credential"):
            Endpoint(url, "wrong").count_training_labels()
        admin = Endpoint(url, ADMIN_TOKEN)
        assert admin.count_training_labels() == len(written)
        assert admin.training_labels(tmp_path / "labels.parquet") == len(written)
    assert {row.tweet_id: row.text for row in read_snapshot(tmp_path / "labels.parquet")} == written


def test_with_a_running_endpoint_the_snapshot_comes_through_it_whole(
    engine: tuple[Settings, ClickHouseSink], tmp_path: Path
) -> None:
    """In the embedded mode `up` owns the directory: retrain finds its endpoint and downloads, no row limit."""
    from emostream.retraining import count_labels, export_snapshot
    from emostream.stream.discovery import endpoint_file, remove_state, write_state
    from emostream.stream.web.auth import token_file, write_token

    settings, sink = engine
    fill_large(sink)
    written = queue(sink, EMBEDDED, prefix="z") | queue(sink, BARE, prefix="zb", direct=True)
    directory = Path(settings.resolved_clickhouse_dsn().removeprefix("chdb://"))
    with endpoint_serving(settings.resolved_clickhouse_dsn()) as (url, asked):
        write_token(token_file(endpoint_file(directory)), ADMIN_TOKEN)
        write_state(endpoint_file(directory), url=url, dsn=settings.resolved_clickhouse_dsn())
        try:
            assert count_labels(settings.resolved_clickhouse_dsn()) == N_LARGE + len(written)
            path, n = export_snapshot(settings.resolved_clickhouse_dsn(), tmp_path)
        finally:
            remove_state(endpoint_file(directory))
    assert asked == ["/labels/count", "/labels"]
    rows = read_snapshot(path)
    assert n == len(rows) == N_LARGE + len(written)
    assert {row.tweet_id: row.text for row in rows if row.tweet_id.startswith("z")} == written


@pytest.mark.integration
def test_a_running_worker_serves_the_labels_to_the_operator_alone(
    broker: str, trained_registry: Path, tmp_path: Path
) -> None:
    """The real `emostream worker` (as `up` runs it) owns the directory: `labels` and retrain go through it."""
    from tests.test_streaming import Stack

    stack = Stack(broker, trained_registry, tmp_path)
    sink = ClickHouseSink(stack.dsn())
    try:
        sink.apply_schema()
        fill_large(sink)
        written = queue(sink, EMBEDDED[:3], prefix="z")
    finally:
        sink.close()
    stack.env["EMOSTREAM_REVIEW_TOKEN"] = REVIEW_TOKEN
    env = {**stack.env, "EMOSTREAM_CLICKHOUSE_DSN": stack.dsn()}
    try:
        stack.start_worker()
        url = stack.endpoint().url
        for route in ("/labels", "/labels/count"):
            assert status_of(url + route, None) == 401, route
            assert status_of(url + route, REVIEW_TOKEN) == 403, route
        exported = tmp_path / "labels.csv"
        result = run_cli("labels", "--with-ids", "--out", exported, env=env)  # the directory is locked: via /labels
        assert result.returncode == 0, result.stderr + stack.logs()
    finally:
        stack.stop()
    rows = read_snapshot(exported)
    assert len(rows) == N_LARGE + len(written)
    assert {row.tweet_id: row.text for row in rows if row.tweet_id.startswith("z")} == written


def test_a_cut_download_is_refused(tmp_path: Path) -> None:
    from emostream.stream.clickhouse.sql import SqlError
    from emostream.stream.web.endpoint import parquet_rows
    from emostream.trainer.retrain import write_snapshot

    whole = tmp_path / "whole.parquet"
    write_snapshot([ReviewedTweet("t1", "text", "joy")], whole)
    assert parquet_rows(whole) == 1
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[:-20])
    with pytest.raises(SqlError, match="not whole Parquet"):
        parquet_rows(cut)
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_snapshot(cut)


# --- `emostream labels`: the CSV that `train --data` and `retrain --labels` read ----------------------------------


def test_the_labels_export_reads_back_exactly_with_a_csv_reader_and_with_train_data(tmp_path: Path) -> None:
    from emostream.trainer.data import read_rows

    home = tmp_path / "home"
    sink = ClickHouseSink(Settings(home=home).resolved_clickhouse_dsn())
    try:
        sink.apply_schema()
        written = queue(sink, EMBEDDED)
    finally:
        sink.close()  # the command opens the directory itself (no `up` holds it)
    env = {**os.environ, "EMOSTREAM_HOME": str(home)}
    with_ids = tmp_path / "with-ids.csv"
    result = run_cli("labels", "--with-ids", "--out", with_ids, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{len(written):,} labelled tweets written" in result.stderr
    with with_ids.open(newline="", encoding="utf-8") as handle, any_field_size():
        exported = {row["tweet_id"]: row["text"] for row in csv.DictReader(handle)}
    assert exported == written
    assert {row.tweet_id: row.text for row in read_snapshot(with_ids)} == written  # `retrain --labels` reads it
    plain = tmp_path / "labels.csv"
    assert run_cli("labels", "--out", plain, env=env).returncode == 0
    printed = subprocess.run([str(EMOSTREAM), "labels"], capture_output=True, env=env, timeout=120, check=True)
    assert printed.stdout == plain.read_bytes()  # standard output holds the same bytes
    with any_field_size():  # emostream.trainer.data's reader keeps the csv module's 128 KiB field limit: lift it here
        rows = read_rows(plain)  # what `emostream train --data labels.csv` reads
    assert sorted(row.text for row in rows) == sorted(text.strip() for text in written.values())


@contextmanager
def any_field_size() -> Iterator[None]:
    before = csv.field_size_limit(1 << 30)
    try:
        yield
    finally:
        csv.field_size_limit(before)


def test_the_csv_writer_quotes_a_bare_cr_that_python_would_leave_bare() -> None:
    from emostream.streaming_commands import csv_writer

    rows = [["id", "text"], ["1", "plain"], ["2", "a\rb"], ["3", "\r"], ["4", 'q"\n,']]
    buffer = io.StringIO(newline="")
    writerow = csv_writer(buffer)
    for row in rows:
        writerow(row)
    text = buffer.getvalue()
    assert text.startswith("id,text\n1,plain\n")  # rows without a CR look as before: LF line ends, minimal quotes
    assert list(csv.reader(io.StringIO(text, newline=""))) == rows


# --- `retrain --labels FILE`: a person's CSV ---------------------------------------------------------------------


def test_a_csv_snapshot_keeps_quoted_newlines_and_separators(tmp_path: Path) -> None:
    texts = EMBEDDED[:-1] + BARE
    file = tmp_path / "given.csv"
    with file.open("w", newline="", encoding="utf-8-sig") as handle:  # as a spreadsheet saves it: BOM, CRLF
        writer = csv.writer(handle)
        writer.writerow(["tweet_id", "text", "label"])
        writer.writerows([f"g{i}", text, LABELS[i % 6]] for i, text in enumerate(texts))
    rows = read_snapshot(file)
    assert [row.text for row in rows] == texts
    kept = tmp_path / "kept.parquet"
    keep_snapshot(file, rows, kept)  # the copy beside a new version is Parquet
    assert snapshot_format(kept) == "parquet" and read_snapshot(kept) == rows


def test_a_bad_row_is_named_by_its_line_even_after_multi_line_texts(tmp_path: Path) -> None:
    file = tmp_path / "labels.csv"
    file.write_text('tweet_id,text,label\nt1,"one\ntwo\nthree",joy\nt2,fine,angry\n', newline="")
    with pytest.raises(DataError, match=r"labels.csv:5: label: 'angry'"):
        read_snapshot(file)


# --- retrain --watch -----------------------------------------------------------------------------------------------


class Stop(Exception):
    pass


def watch_job(tmp_path: Path) -> Any:
    """A RetrainJob for the watch loop's tests, whose rounds and counts are replaced."""
    from emostream.retraining import RetrainJob
    from emostream.trainer.data import ColumnMap
    from emostream.trainer.retrain import RetrainPolicy

    return RetrainJob(tmp_path / "models", "chdb:///nowhere", "no-data", ColumnMap(), RetrainPolicy())


def test_watch_logs_a_round_it_cannot_run_and_waits_instead_of_exiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from emostream import retraining
    from emostream.stream.clickhouse.sql import SqlError
    from emostream.trainer.retrain import RetrainError

    counts = iter([30, 30, 30, 31, 31, 31, 32, 32, 33])
    monkeypatch.setattr(retraining, "count_labels", lambda dsn: next(counts))
    outcomes: list[BaseException | None] = [
        RetrainError("too few [bold]labels[/bold]\x1b[2J"),  # a data problem: wait for the count to change
        SqlError("ClickHouse went away\nCode: 210"),  # an outage: try again after the interval
        None,  # the round runs (at 31)
        DataError("snapshot.csv", "label: 'x' is not one of", 7),
        KeyError("surprise"),  # anything else counts as a data problem too
        None,
    ]
    rounds: list[int] = []

    def fake_round(job: Any, labels_file: Path | None, wait: bool) -> str:
        assert labels_file is None and wait  # a snapshot each time; a round that is running already is waited for
        rounds.append(len(rounds))
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return f"round {len(rounds)}"

    monkeypatch.setattr(retraining, "run_round", fake_round)
    monkeypatch.setattr("emostream.trainer.retrain.labels_since_last_round", lambda registry: 0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 9:
            raise KeyboardInterrupt  # Ctrl-C still stops it

    reported: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        retraining.watch_labels(watch_job(tmp_path), 1, 7.0, reported.append, sleep=sleep)
    # 30: a data problem; 30, 30: no change, no round; 31: an outage; 31: tried again, runs; 31: (the
    # registry here never records a round, so 31 is still "new") a DataError; 32: changed, a KeyError;
    # 32: no round; 33: changed, runs. A sleep of the interval after every look.
    assert slept == [7.0] * 9
    stderr = capsys.readouterr().err
    assert "retrain --watch: the round could not run: too few [bold]labels[/bold]\\x1b[2J" in stderr
    assert "trying again once new labels arrive (now 30)" in stderr
    assert "the round stopped: ClickHouse went away\\nCode: 210; trying again in 7 s" in stderr
    assert "snapshot.csv:7: label: 'x' is not one of" in stderr
    assert "KeyError: 'surprise'" in stderr
    assert "\x1b[2J" not in stderr
    assert len(rounds) == 6 and not outcomes
    assert reported == ["round 3", "round 6"]  # the rounds that ran, given to the caller to print


def test_watch_waits_out_a_count_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from emostream import retraining

    def no_clickhouse(dsn: str) -> int:
        raise OSError("Cannot lock file [x]")

    monkeypatch.setattr(retraining, "count_labels", no_clickhouse)
    monkeypatch.setattr(retraining, "run_round", lambda *args, **kwargs: pytest.fail("no round without a count"))
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        retraining.watch_labels(watch_job(tmp_path), 1, 2.5, lambda result: None, sleep=sleep)
    stderr = capsys.readouterr().err
    assert (
        stderr.count("retrain --watch: cannot count the labels: OSError: Cannot lock file [x]; trying again in 2.5 s")
        == 3
    )
