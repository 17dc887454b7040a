"""The review service over HTTP, as `emostream review` serves it: real broker, real engine, real server.

The queue is filled on the engine first; then `emostream review` serves it, and each test talks to it
the way the page (a cookie and the CSRF token) or a program (a bearer token) does, hostile requests
included. What reaches `tweets.labels` is read from the broker; what reached `review_labels`, from the
engine once the server has stopped (chDB lets one process at a time open a directory).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import LABELS, EmotionScore, ReviewItem, Tweet
from stream.broker import free_port
from stream.sink import ClickHouseSink
from tests.conftest import EMOSTREAM, run_cli
from tests.test_streaming import read_topic

pytestmark = pytest.mark.integration

REVIEW_TOKEN = "review-" + uuid.uuid4().hex
ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ITEMS = 40


def queue_item(i: int) -> ReviewItem:
    margin = ((i * 7) % ITEMS) / 100  # distinct margins, not in id order
    top = 0.4 + margin / 2
    probabilities = dict.fromkeys(LABELS, (1 - top) / 5) | {LABELS[i % 6]: top}
    score = EmotionScore(
        tweet_id=f"q{i:03d}",
        brand="acme" if i % 2 else "globex",
        created_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC) + timedelta(minutes=i),
        scored_at=datetime.now(UTC),
        model_version="v0007",
        label=LABELS[i % 6],
        confidence=top,
        margin=margin,
        **probabilities,
    )
    return ReviewItem(tweet=Tweet(id=score.tweet_id, text=f"queued tweet {i}"), score=score, reason="test")


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    directory: Path
    bootstrap: str
    topic: str
    log: Path
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if body is not None and raw is None:
            sent.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        text = response.read().decode()
        try:
            payload: Any = json.loads(text)
        except ValueError:
            payload = text
        return response.status, payload, response

    def login(self, reviewer: str) -> Browser:
        status, _, response = self.request("GET", f"/review?token={REVIEW_TOKEN}&reviewer={reviewer}")
        assert status == 303 and response.getheader("Location") == "/review"
        cookie = response.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        name, _, value = cookie.split(";")[0].partition("=")
        browser = Browser(self, {"Cookie": f"{name}={value}"})
        status, session, _ = self.request("GET", "/review/api/session", headers=browser.cookie)
        assert status == 200 and session["reviewer"] == reviewer and session["scope"] == "review"
        browser.csrf = session["csrf"]
        return browser

    def labels_on_topic(self, expect: int) -> list[dict[str, Any]]:
        return [json.loads(value) for value in read_topic(self.bootstrap, self.topic, expect, timeout=10)]


@dataclass
class Browser:
    """What the page does: the session cookie on every request, the CSRF token on every POST."""

    server: Server
    cookie: dict[str, str]
    csrf: str = ""

    def get(self, path: str) -> Any:
        status, body, _ = self.server.request("GET", path, headers=self.cookie)
        assert status == 200, body
        return body

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        status, answer, _ = self.server.request("POST", path, body, {**self.cookie, "X-CSRF-Token": self.csrf})
        return status, answer

    def window(self, n: int = 5, **filters: str) -> list[str]:
        query = "&".join(f"{k}={v}" for k, v in {"n": str(n), **filters}.items())
        return [item["tweet_id"] for item in self.get(f"/review/api/items?{query}")["items"]]


@pytest.fixture(scope="module")
def server(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("review")
    directory = tmp / "ch"
    sink = ClickHouseSink(f"chdb://{directory}")
    sink.apply_schema()
    items = [queue_item(i) for i in range(ITEMS)]
    sink.write([item.score for item in items], reviews=items)
    sink.close()
    port = free_port("127.0.0.1")
    topic = f"labels-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "EMOSTREAM_KAFKA_BOOTSTRAP": broker,
        "EMOSTREAM_CLICKHOUSE_DSN": f"chdb://{directory}",
        "EMOSTREAM_HOME": str(tmp / "home"),
        "EMOSTREAM_TOPIC_LABELS": topic,
        "EMOSTREAM_WEB_PORT": str(port),
        "EMOSTREAM_REVIEW_TOKEN": REVIEW_TOKEN,
        "EMOSTREAM_WEB_TOKEN": ADMIN_TOKEN,
    }
    log = tmp / "review.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([str(EMOSTREAM), "review"], env=env, stdout=handle, stderr=handle)
    running = Server(port, process, directory, broker, topic, log)
    deadline = time.monotonic() + 60
    while "review page: " not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield running
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def test_the_page_is_served_with_its_assets_and_the_url_holds_no_secret_it_did_not_make(server: Server) -> None:
    log = server.log.read_text()
    assert f"http://127.0.0.1:{server.port}/review (token: EMOSTREAM_REVIEW_TOKEN)" in log
    assert REVIEW_TOKEN not in log  # a token the user set is not printed
    ana = server.login("ana")
    page = server.request("GET", "/review", headers=ana.cookie)
    assert page[0] == 200 and "/review/static/review.js" in page[1]
    assert page[2].getheader("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in page[2].getheader("Content-Security-Policy")
    for asset in ("review.js", "emostream.css", "trends.js"):
        status, body, _ = server.request("GET", f"/review/static/{asset}", headers=ana.cookie)
        assert status == 200 and len(body) > 500
        assert "http://" not in body and "https://" not in body  # no CDN: it works with no internet
    assert "http://" not in page[1] and "https://" not in page[1]
    status, body, _ = server.request("GET", "/review/static/review.js")  # assets too need the session
    assert status == 401


def test_the_most_uncertain_come_first_filters_narrow_and_counts_add_up(server: Server) -> None:
    ana = server.login("ana-order")
    window = ana.get("/review/api/items?n=6")
    margins = [item["margin"] for item in window["items"]]
    assert margins == sorted(margins) and margins[0] == 0.0
    assert window["counts"]["pending_all"] == ITEMS and window["counts"]["done"] == 0
    assert sum(window["counts"]["brands"].values()) == ITEMS
    acme = ana.get("/review/api/items?n=6&brand=acme")
    assert {item["brand"] for item in acme["items"]} == {"acme"} and acme["counts"]["pending"] == ITEMS // 2
    fear = ana.get("/review/api/items?n=6&label=fear")
    assert {item["label"] for item in fear["items"]} == {"fear"}
    assert fear["counts"]["pending"] == len(fear["items"]) == sum(LABELS[i % 6] == "fear" for i in range(ITEMS))
    item = acme["items"][0]
    assert set(item["probabilities"]) == set(LABELS) and item["text"].startswith("queued tweet")


def test_two_reviewers_never_get_the_same_item_and_a_label_on_anothers_item_is_refused(server: Server) -> None:
    ana, bo = server.login("ana"), server.login("bo")
    mine, theirs = ana.window(8), bo.window(8)
    assert len(mine) == len(theirs) == 8 and not set(mine) & set(theirs)
    assert ana.window(8) == mine  # renewing keeps the same items, in the same order
    status, answer = bo.post("/review/api/label", {"tweet_id": mine[0], "label": "joy"})
    assert status == 409 and "another reviewer" in answer["error"]
    status, answer = ana.post("/review/api/label", {"tweet_id": mine[0], "label": "anger"})
    assert status == 200 and answer["label"]["reviewer"] == "ana" and answer["label"]["model_version"] == "v0007"
    assert mine[0] not in ana.window(8) and mine[0] not in bo.window(8)  # labelled: no longer pending
    skipped = mine[1]
    assert ana.post("/review/api/skip", {"tweet_id": skipped})[0] == 200
    assert skipped not in ana.window(8)
    assert skipped in server.login("cat").window(3)  # given up at once: the next reviewer gets it


def test_a_label_is_on_the_topic_before_the_page_hears_saved_and_undo_withdraws_it(server: Server) -> None:
    cy = server.login("cy")
    first, second = cy.window(2)
    assert cy.post("/review/api/label", {"tweet_id": first, "label": "fear"})[0] == 200
    assert cy.post("/review/api/label", {"tweet_id": second, "label": "none"})[0] == 200
    status, answer = cy.post("/review/api/undo", {"tweet_id": second})
    assert status == 200 and answer["item"]["tweet_id"] == second
    assert cy.window(3)[0] == second  # back on the reviewer's screen, first
    records = [r for r in server.labels_on_topic(expect=4) if r["reviewer"] == "cy"]  # ana's one, and cy's
    # keyed by tweet id: one tweet's events share a partition and keep their order
    by_tweet = {t: [(r["label"], r["retracted"]) for r in records if r["tweet_id"] == t] for t in (first, second)}
    assert by_tweet == {first: [("fear", False)], second: [("none", False), ("none", True)]}
    assert cy.post("/review/api/undo", {"tweet_id": second})[0] == 409  # nothing left to undo
    dee = server.login("dee")
    status, answer = dee.post("/review/api/undo", {"tweet_id": first})
    assert status == 409 and "cy's, not yours" in answer["error"]


def test_requests_without_the_credential_or_the_csrf_token_write_nothing(server: Server) -> None:
    eve = server.login("eve")
    target = eve.window(1)[0]
    before = eve.get("/review/api/items?n=1")["counts"]["done"]
    label = {"tweet_id": target, "label": "joy"}
    attempts = {
        "no credential": server.request("POST", "/review/api/label", label),
        "no CSRF token": server.request("POST", "/review/api/label", label, eve.cookie),
        "wrong CSRF token": server.request(
            "POST", "/review/api/label", label, {**eve.cookie, "X-CSRF-Token": "0" * 64}
        ),
        "another origin": server.request(
            "POST",
            "/review/api/label",
            label,
            {**eve.cookie, "X-CSRF-Token": eve.csrf, "Origin": "http://evil.example"},
        ),
        "a form post": server.request(
            "POST",
            "/review/api/label",
            headers={**eve.cookie, "X-CSRF-Token": eve.csrf, "Content-Type": "application/x-www-form-urlencoded"},
            raw=f"tweet_id={target}&label=joy".encode(),
        ),
        "a forged cookie": server.request(
            "POST", "/review/api/label", label, {"Cookie": eve.cookie["Cookie"][:-3] + "abc", "X-CSRF-Token": eve.csrf}
        ),
        "the token in the URL of an API call": server.request("POST", f"/review/api/label?token={REVIEW_TOKEN}", label),
    }
    statuses = {name: status for name, (status, _, _) in attempts.items()}
    assert statuses == {
        "no credential": 401,
        "no CSRF token": 403,
        "wrong CSRF token": 403,
        "another origin": 403,
        "a form post": 415,
        "a forged cookie": 401,
        "the token in the URL of an API call": 401,
    }
    status, page, _ = server.request("GET", "/review")  # a fresh browser: the sign-in page, no items
    assert status == 401 and "data-tweet-id" not in page and "Sign-in needed" in page
    assert server.request("GET", f"/review?token={REVIEW_TOKEN}x")[0] == 401
    assert eve.get("/review/api/items?n=1")["counts"]["done"] == before  # nothing was written


def test_bad_bodies_are_named_and_the_review_token_opens_nothing_else(server: Server) -> None:
    fay = server.login("fay")
    target = fay.window(1)[0]
    status, answer = fay.post("/review/api/label", {"tweet_id": target, "label": "boredom"})
    assert status == 400 and answer["error"].startswith("label: must be one of sadness")
    status, answer = fay.post("/review/api/label", {"label": "joy"})
    assert status == 400 and "tweet_id: Field required" in answer["error"]
    status, answer = fay.post("/review/api/label", {"tweet_id": "no-such-tweet", "label": "joy"})
    assert status == 404 and "not in the review queue" in answer["error"]
    status, answer = fay.post("/review/api/session", {"reviewer": "x" * 65})
    assert status == 400 and "reviewer: at most 64" in answer["error"]
    reviewer = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    assert server.request("POST", "/sql", headers=reviewer, raw=b"SELECT 1")[0] == 403
    assert server.request("GET", "/", headers=reviewer)[0] == 403
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert server.request("POST", "/sql", headers=admin, raw=b"SELECT 1")[0] == 404  # let through: no such route here
    program = {**reviewer, "X-Reviewer": "sim"}  # a program labels with the bearer token, no cookie, no CSRF
    status, answer, _ = server.request("POST", "/review/api/label", {"tweet_id": target, "label": "love"}, program)
    assert status == 409  # fay has it on her screen
    status, window, _ = server.request("GET", "/review/api/items?n=1", headers=program)
    own = window["items"][0]["tweet_id"]
    status, answer, _ = server.request("POST", "/review/api/label", {"tweet_id": own, "label": "love"}, program)
    assert status == 200 and answer["label"]["reviewer"] == "sim"


def test_trends_answer_on_the_same_credential(server: Server) -> None:
    gus = server.login("gus")
    status, answer, _ = server.request("GET", "/trends/api?by=minute&since=30d", headers=gus.cookie)
    assert status == 200 and set(answer["shares"]) == set(LABELS)
    status, answer, _ = server.request("GET", "/trends/api?by=week", headers=gus.cookie)
    assert status == 400 and answer["error"].startswith("by: must be minute, hour or day")
    assert server.request("GET", "/trends/api")[0] == 401


def test_simulated_reviewers_label_through_the_same_api_and_skip_what_they_do_not_know(
    server: Server, tmp_path: Path
) -> None:
    answers = tmp_path / "gold.csv"  # answers for the odd items only, by text
    answers.write_text("text,label\n" + "".join(f"queued tweet {i},anger\n" for i in range(1, ITEMS, 2)))
    url = f"http://127.0.0.1:{server.port}"
    base = ("review", "simulate", "--url", url, "--answers", answers, "--reviewer", "bot")
    refused = run_cli(*base, env={"EMOSTREAM_REVIEW_TOKEN": "wrong"})
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr
    assert run_cli(*base).returncode == 2  # no credential at all: says which setting to give
    result = run_cli(*base, "--budget", "3", env={"EMOSTREAM_REVIEW_TOKEN": REVIEW_TOKEN})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 labels given as 'bot'" in result.stdout
    labels = [r for r in server.labels_on_topic(expect=8) if r["reviewer"] == "bot"]
    assert len(labels) == 3 and {r["label"] for r in labels} == {"anger"}
    assert all(int(r["tweet_id"][1:]) % 2 == 1 for r in labels)  # only items the answers know


def test_what_the_topic_has_the_table_has(server: Server) -> None:
    """Last: stop the server and read review_labels from the engine."""
    on_topic = server.labels_on_topic(expect=8)
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(30) == 0, server.log.read_text()[-2000:]
    sink = ClickHouseSink(f"chdb://{server.directory}")
    try:
        _, rows = sink.query("SELECT tweet_id, label, reviewer, retracted FROM review_labels ORDER BY labelled_at")
    finally:
        sink.close()
    assert sorted((r["tweet_id"], r["label"], r["reviewer"], r["retracted"]) for r in on_topic) == sorted(rows)
    assert len(rows) == 8  # ana's, cy's two and one undo, sim's, bot's three: nothing from refused requests
