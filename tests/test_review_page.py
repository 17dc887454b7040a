"""The review service over HTTP, as `emostream review` serves it: real broker, real engine, real server.

The queue is filled on the engine first; then `emostream review` serves it, and each test talks to it
the way the page (a cookie and the CSRF token) or a program (a bearer token) does, hostile requests
included. What reaches `tweets.labels` is read from the broker; what reached `review_labels`, from the
engine once the server has stopped (chDB lets one process at a time open a directory).

Besides the 40 items of the page's order, the queue holds a tweet id that was sent twice with different
texts (RESENT: the first text labelled by another reviewer, bo, before the server started; the second
pending), for the rules that bind a label to what was shown and to the server's reviewer.
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

from emostream.schemas import LABELS, EmotionScore, ReviewItem, Tweet
from emostream.schemas.messages import TWEET_ID_MAX_CHARS
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.kafka.broker import free_port
from emostream.stream.review.leases import LEASE_HOLDERS
from emostream.stream.review.queue import ReviewQueue, ShownLabel, text_sha256
from tests.conftest import EMOSTREAM, run_cli
from tests.test_streaming import read_topic

pytestmark = pytest.mark.integration

REVIEW_TOKEN = "review-" + uuid.uuid4().hex
ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ITEMS = 40
REVIEWER = "ana"  # the server's EMOSTREAM_REVIEWER: every session and program of its tokens labels as ana
RESENT, FIRST_TEXT, SECOND_TEXT = "r1", "resent tweet, as it was first sent", "resent tweet, other text"
PENDING_AT_START, DONE_AT_START = ITEMS + 1, 1  # RESENT's second text is pending, its first is bo's


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


def resent_item(text: str, minutes: int) -> ReviewItem:
    """Last in the queue's order (margin 0.9), of a brand and a model label of its own."""
    score = queue_item(0).score.model_copy(
        update={"tweet_id": RESENT, "brand": "initech", "label": "surprise", "margin": 0.9, "confidence": 0.5}
    )
    score.scored_at += timedelta(minutes=minutes)
    return ReviewItem(tweet=Tweet(id=RESENT, text=text), score=score, reason="test")


def ref(tweet_id: str, text: str) -> dict[str, str]:
    return {"tweet_id": tweet_id, "text_sha256": text_sha256(text)}


def queued(i: int) -> dict[str, str]:
    return ref(f"q{i:03d}", f"queued tweet {i}")


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

    def login(self, query: str = "", token: str = REVIEW_TOKEN, reviewer: str = REVIEWER) -> Browser:
        """A new browser session, signed in with ``token`` (the shared review token unless told; ``query``:
        more of the sign-in URL), whose server-bound name must be ``reviewer``."""
        status, _, response = self.request("GET", f"/review?token={token}{query}")
        assert status == 303 and response.getheader("Location") == "/review"
        cookie = response.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        name, _, value = cookie.split(";")[0].partition("=")
        browser = Browser(self, {"Cookie": f"{name}={value}"})
        status, session, _ = self.request("GET", "/review/api/session", headers=browser.cookie)
        assert status == 200 and session["reviewer"] == reviewer and session["scope"] == "review"
        browser.csrf = session["csrf"]
        return browser

    def program(self, path: str, body: Any = None, token: str = REVIEW_TOKEN, **headers: str) -> tuple[int, Any]:
        """A program's request: a token (the shared review token unless told) as a bearer, no cookie, no CSRF."""
        sent = {"Authorization": f"Bearer {token}", **{k.replace("_", "-"): v for k, v in headers.items()}}
        status, answer, _ = self.request("GET" if body is None else "POST", path, body, sent)
        return status, answer

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

    def items(self, n: int = 5, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in {"n": str(n), **filters}.items())
        return self.get(f"/review/api/items?{query}")["items"]

    def window(self, n: int = 5, **filters: str) -> list[str]:
        return [item["tweet_id"] for item in self.items(n, **filters)]

    def label(self, item: dict[str, Any] | str, label: str) -> tuple[int, Any]:
        """Label an item as the page does: by id and the hash of the text shown (a q-id: its queued text)."""
        return self.post("/review/api/label", {**_ref(item), "label": label})

    def undo(self, item: dict[str, Any] | str) -> tuple[int, Any]:
        return self.post("/review/api/undo", _ref(item))

    def skip(self, item: dict[str, Any] | str) -> tuple[int, Any]:
        return self.post("/review/api/skip", _ref(item))


def _ref(item: dict[str, Any] | str) -> dict[str, str]:
    if isinstance(item, str):
        return queued(int(item[1:]))
    return {"tweet_id": item["tweet_id"], "text_sha256": item["text_sha256"]}


@pytest.fixture(scope="module")
def server(any_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One review server per broker (tansu, Kafka 4, Kafka 3.9): the module's tests run on each in turn."""
    broker = any_broker
    tmp = tmp_path_factory.mktemp("review")
    directory = tmp / "ch"
    sink = ClickHouseSink(f"chdb://{directory}")
    sink.apply_schema()
    items = [queue_item(i) for i in range(ITEMS)]
    sink.write([item.score for item in items], reviews=items)
    sink.write([], reviews=[resent_item(FIRST_TEXT, 0)])
    sink.write([], reviews=[resent_item(SECOND_TEXT, 5)])  # the same id again, with other text
    sink.close()
    queue = ReviewQueue(f"chdb://{directory}")  # bo labelled the first text (on another server, say)
    queue.write_label(
        ShownLabel(**ref(RESENT, FIRST_TEXT), label="joy", reviewer="bo", model_version="v0007", confidence=0.5)
    )
    queue.close()
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
        "EMOSTREAM_REVIEWER": REVIEWER,
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
    ana = server.login()
    page = server.request("GET", "/review", headers=ana.cookie)
    assert page[0] == 200 and "/review/static/review.js" in page[1]
    assert page[2].getheader("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in page[2].getheader("Content-Security-Policy")
    for asset in ("review.js", "emostream.css", "trends.js"):
        status, body, _ = server.request("GET", f"/review/static/{asset}", headers=ana.cookie)
        assert status == 200 and len(body) > 500
        assert "http://" not in body and "https://" not in body  # no CDN: it works with no internet
    assert "http://" not in page[1] and "https://" not in page[1]
    # the page comes with its session and first items, as data no tweet text can break out of
    block = page[1].split('<script id="initial" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block
    initial = json.loads(block)
    assert initial["session"]["reviewer"] == REVIEWER and initial["session"]["csrf"] == ana.csrf
    shown = [item["tweet_id"] for item in initial["window"]["items"]]
    assert len(shown) == 10 and [i["tweet_id"] for i in ana.get("/review/api/items?n=10")["items"]] == shown
    assert ana.get("/review/api/items?n=1&brand=no-such-brand")["items"] == []  # gives the 10 back
    status, body, _ = server.request("GET", "/review/static/review.js")  # assets too need the session
    assert status == 401


def test_the_most_uncertain_come_first_filters_narrow_and_counts_add_up(server: Server) -> None:
    ana = server.login()
    window = ana.get("/review/api/items?n=6")
    margins = [item["margin"] for item in window["items"]]
    assert margins == sorted(margins) and margins[0] == 0.0
    counts = window["counts"]
    assert counts["pending_all"] == PENDING_AT_START and counts["done"] == DONE_AT_START
    assert counts["done_by_you"] == 0  # bo's label is not ana's
    assert sum(counts["brands"].values()) == PENDING_AT_START and counts["brands"]["initech"] == 1
    acme = ana.get("/review/api/items?n=6&brand=acme")
    assert {item["brand"] for item in acme["items"]} == {"acme"} and acme["counts"]["pending"] == ITEMS // 2
    fear = ana.get("/review/api/items?n=6&label=fear")
    assert {item["label"] for item in fear["items"]} == {"fear"}
    assert fear["counts"]["pending"] == len(fear["items"]) == sum(LABELS[i % 6] == "fear" for i in range(ITEMS))
    item = acme["items"][0]
    assert set(item["probabilities"]) == set(LABELS) and item["text"].startswith("queued tweet")
    assert item["text_sha256"] == text_sha256(item["text"])  # the item names the text it shows
    (resent,) = ana.items(6, brand="initech")
    assert resent["tweet_id"] == RESENT and resent["text"] == SECOND_TEXT  # the labelled first text is not
    assert ana.skip(resent)[0] == 200  # off this screen again (later tests label it)


def test_two_sessions_never_get_the_same_item_and_a_label_on_anothers_item_is_refused(server: Server) -> None:
    one, two = server.login(), server.login()  # one reviewer, two tabs (or two people on the shared token)
    mine, theirs = one.window(8), two.window(8)
    assert len(mine) == len(theirs) == 8 and not set(mine) & set(theirs)
    assert one.window(8) == mine  # renewing keeps the same items, in the same order
    status, answer = two.label(mine[0], "joy")
    assert status == 409 and "another reviewer" in answer["error"]
    status, answer = one.label(mine[0], "anger")
    assert status == 200 and answer["label"]["reviewer"] == REVIEWER and answer["label"]["model_version"] == "v0007"
    assert answer["label"]["text_sha256"] == text_sha256(f"queued tweet {int(mine[0][1:])}")
    assert mine[0] not in one.window(8) and mine[0] not in two.window(8)  # labelled: no longer pending
    skipped = mine[1]
    assert one.skip(skipped)[0] == 200
    assert skipped not in one.window(8)
    assert skipped in server.login().window(3)  # given up at once: the next session gets it


def test_a_label_is_on_the_topic_before_the_page_hears_saved_and_undo_withdraws_it(server: Server) -> None:
    cy = server.login()
    first, second = cy.window(2)
    assert cy.label(first, "fear")[0] == 200
    assert cy.label(second, "none")[0] == 200
    status, answer = cy.undo(second)
    assert status == 200 and answer["item"]["tweet_id"] == second
    assert cy.window(3)[0] == second  # back on the reviewer's screen, first
    records = [r for r in server.labels_on_topic(expect=4) if r["tweet_id"] in (first, second)]
    # keyed by tweet id: one tweet's events share a partition and keep their order
    by_tweet = {t: [(r["label"], r["retracted"]) for r in records if r["tweet_id"] == t] for t in (first, second)}
    assert by_tweet == {first: [("fear", False)], second: [("none", False), ("none", True)]}
    assert {r["text_sha256"] for r in records} == {queued(int(t[1:]))["text_sha256"] for t in (first, second)}
    assert cy.undo(second)[0] == 409  # nothing left to undo
    other_tab = server.login()  # the same reviewer in another tab (the shared token: one reviewer)
    status, answer = other_tab.label(first, "sadness")  # relabelling one's own label is allowed
    assert status == 200 and answer["label"]["label"] == "sadness"
    assert other_tab.undo(first)[0] == 200  # and so is undoing it


def test_the_reviewer_is_the_servers_and_anothers_label_is_neither_undone_nor_overwritten(server: Server) -> None:
    """The findings of the issue, as requests: a name chosen at sign-in, by a header, by a query parameter
    or by the removed rename endpoint changes nothing; bo's label on RESENT's first text stays bo's."""
    named = server.login("&reviewer=bo")  # login() checks: the session is ana's all the same
    assert named.post("/review/api/session", {"reviewer": "bo"})[0] == 405  # no rename any more
    assert named.get("/review/api/session?reviewer=bo")["reviewer"] == REVIEWER
    first = ref(RESENT, FIRST_TEXT)
    for who, (status, answer) in {
        "a session": named.undo(first),
        "a session claiming X-Reviewer: bo": server.request(
            "POST", "/review/api/undo", first, {**named.cookie, "X-CSRF-Token": named.csrf, "X-Reviewer": "bo"}
        )[:2],
        "a program claiming X-Reviewer: bo": server.program("/review/api/undo", first, X_Reviewer="bo"),
        "a program with ?reviewer=bo": server.program("/review/api/undo?reviewer=bo", first),
    }.items():
        assert status == 409 and "is bo's, not yours" in answer["error"], who
    for status, answer in (
        named.post("/review/api/label", {**first, "label": "anger"}),
        server.program("/review/api/label", {**first, "label": "anger"}, X_Reviewer="bo"),
    ):
        assert status == 409 and "already labelled by bo" in answer["error"]
    status, window = server.program("/review/api/items?n=1&reviewer=bo", X_Reviewer="bo")
    assert status == 200 and window["counts"]["done_by_you"] < window["counts"]["done"]  # bo's is not "yours"
    status, answer = server.program("/review/api/label", {**_ref(window["items"][0]), "label": "joy"}, X_Reviewer="bo")
    assert status == 200 and answer["label"]["reviewer"] == REVIEWER  # the header named nobody


def test_a_label_binds_to_the_text_shown_and_a_changed_text_is_refused(server: Server) -> None:
    second = ref(RESENT, SECOND_TEXT)
    status, answer = server.program(
        "/review/api/label", {**ref(RESENT, "a text the page never showed"), "label": "joy"}
    )
    assert status == 409 and "changed since it was shown" in answer["error"]
    status, answer = server.program("/review/api/label", {**ref("q005", "queued tweet 5, edited"), "label": "joy"})
    assert status == 409 and "changed since it was shown" in answer["error"]
    status, answer = server.program("/review/api/label", {**second, "label": "anger"})
    assert status == 200 and answer["label"]["text_sha256"] == second["text_sha256"]
    status, window = server.program("/review/api/items?n=5&brand=initech")
    assert window["items"] == [] and window["counts"]["pending"] == 0  # both texts of RESENT labelled now


def test_requests_without_the_credential_or_the_csrf_token_write_nothing(server: Server) -> None:
    eve = server.login()
    target = eve.window(1)[0]
    before = eve.get("/review/api/items?n=1")["counts"]["done"]
    label = {**queued(int(target[1:])), "label": "joy"}
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
            raw=f"tweet_id={target}&text_sha256={label['text_sha256']}&label=joy".encode(),
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
    fay = server.login()
    target = fay.window(1)[0]
    status, answer = fay.label(target, "boredom")
    assert status == 400 and answer["error"].startswith("label: must be one of sadness")
    status, answer = fay.post("/review/api/label", {"label": "joy", "text_sha256": "0" * 64})
    assert status == 400 and "tweet_id: Field required" in answer["error"]
    status, answer = fay.post("/review/api/label", {"tweet_id": target, "label": "joy"})
    assert status == 400 and "text_sha256: Field required" in answer["error"]  # a label says what it was for
    status, answer = fay.post("/review/api/label", {"tweet_id": target, "text_sha256": "not-a-hash", "label": "joy"})
    assert status == 400 and answer["error"].startswith("text_sha256: String should match pattern")
    status, answer = fay.label(ref("no-such-tweet", "x"), "joy")
    assert status == 404 and "not in the review queue" in answer["error"]
    assert fay.skip(ref("no-such-tweet", "x"))[0] == 404  # an unknown item is not remembered
    huge = {"tweet_id": "x" * 512 * 1024, "text_sha256": "0" * 64}  # the 512 KB ids: refused before use
    for path, body in (("label", {**huge, "label": "joy"}), ("skip", huge), ("undo", huge)):
        status, answer = fay.post(f"/review/api/{path}", body)
        assert (
            status == 400 and f"tweet_id: String should have at most {TWEET_ID_MAX_CHARS} characters" in answer["error"]
        )
    reviewer = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    assert server.request("POST", "/sql", headers=reviewer, raw=b"SELECT 1")[0] == 403
    assert server.request("GET", "/", headers=reviewer)[0] == 403
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert server.request("POST", "/sql", headers=admin, raw=b"SELECT 1")[0] == 404  # let through: no such route here
    status, answer = server.program("/review/api/label", {**queued(int(target[1:])), "label": "love"})
    assert status == 409  # fay has it on her screen
    status, window = server.program("/review/api/items?n=1")
    status, answer = server.program("/review/api/label", {**_ref(window["items"][0]), "label": "love"})
    assert status == 200 and answer["label"]["reviewer"] == REVIEWER


def test_trends_answer_on_the_same_credential(server: Server) -> None:
    gus = server.login()
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
    base = ("review", "simulate", "--url", url, "--answers", answers)
    refused = run_cli(*base, env={"EMOSTREAM_REVIEW_TOKEN": "wrong-" + uuid.uuid4().hex})
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr
    assert run_cli(*base).returncode == 2  # no credential at all: says which setting to give
    token = {"EMOSTREAM_REVIEW_TOKEN": REVIEW_TOKEN}
    named = run_cli(*base, "--reviewer", "bot", env=token)  # --reviewer cannot choose the name
    said = " ".join(named.stderr.split())
    assert named.returncode == 2 and "cannot choose another" in said and f"'{REVIEWER}'" in said
    started = datetime.now(UTC)
    result = run_cli(*base, "--budget", "3", "--reviewer", REVIEWER, env=token)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"3 labels given as '{REVIEWER}'" in result.stdout
    labels = [r for r in server.labels_on_topic(expect=12) if datetime.fromisoformat(r["labelled_at"]) >= started]
    assert (
        len(labels) == 3 and {r["label"] for r in labels} == {"anger"} and {r["reviewer"] for r in labels} == {REVIEWER}
    )
    assert all(int(r["tweet_id"][1:]) % 2 == 1 for r in labels)  # only items the answers know
    assert all(r["text_sha256"] == queued(int(r["tweet_id"][1:]))["text_sha256"] for r in labels)


def test_made_up_sessions_cannot_keep_the_queue_from_an_honest_reviewer(server: Server) -> None:
    """The issue's case: many sessions opened with the token lease what they can; a reviewer who opens
    the page afterwards still gets items, and can label them."""
    flood = [server.login() for _ in range(30)]
    for session in flood:
        session.window(50)
    leased = sum(len(session.window(50)) for session in flood)
    honest = server.login()
    items = honest.items(10)
    assert items, "starved"
    again = honest.get("/review/api/items?n=10")
    assert [item["tweet_id"] for item in again["items"]][: len(items)] == [item["tweet_id"] for item in items]
    assert leased <= LEASE_HOLDERS * 50 and again["counts"]["pending_all"] > len(items)  # the others hold the rest
    assert honest.label(items[0], "sadness")[0] == 200


def test_what_the_topic_has_the_table_has(server: Server) -> None:
    """Last: stop the server and read review_labels from the engine."""
    expected = 13  # 1 + 5 (two undos, a relabel) + 1 + 1 + 1 + 3 (simulated) + 1: none from refused requests
    on_topic = server.labels_on_topic(expect=expected)
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(30) == 0, server.log.read_text()[-2000:]
    sink = ClickHouseSink(f"chdb://{server.directory}")
    try:
        _, rows = sink.query(
            "SELECT tweet_id, label, reviewer, retracted, text_sha256 FROM review_labels ORDER BY labelled_at"
        )
    finally:
        sink.close()
    topic = sorted((r["tweet_id"], r["label"], r["reviewer"], r["retracted"], r["text_sha256"]) for r in on_topic)
    assert len(on_topic) == expected and topic == sorted(row for row in rows if row[2] != "bo")
    assert [row for row in rows if row[2] == "bo"] == [(RESENT, "joy", "bo", False, text_sha256(FIRST_TEXT))]
    assert {row[2] for row in rows} == {REVIEWER, "bo"}  # bo's was written before the server; all else ana's
