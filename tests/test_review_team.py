"""Review as a team, on the real engine (chDB) and broker (tansu): named reviewers with personal tokens,
two opinions per item, disputes settled by an adjudicator, agreement figures, and what retraining takes.

One `emostream up` with ``EMOSTREAM_REVIEW_OPINIONS=2`` for the module; its tests run in order and
build on each other's state (reviewers added, items labelled), as a team's day would.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emostream.model.registry import ModelRegistry
from emostream.schemas import LABELS
from emostream.settings import Settings
from emostream.stream.clickhouse.sink import ClickHouseSink
from emostream.stream.discovery import broker_file, read_state
from emostream.stream.kafka.broker import free_port, terminate
from emostream.stream.web.endpoint import Endpoint
from tests.conftest import EMOSTREAM, run_cli
from tests.test_review_page import ADMIN_TOKEN, REVIEW_TOKEN, REVIEWER, Browser, Server, queue_item, queued

pytestmark = pytest.mark.integration

ITEMS = 12


@pytest.fixture(scope="module")
def team(trained_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`emostream up` (its own embedded broker) over a queue of ITEMS items, two opinions per item."""
    tmp = tmp_path_factory.mktemp("team")
    home = tmp / "home"
    dsn = Settings(home=home).resolved_clickhouse_dsn()
    sink = ClickHouseSink(dsn)
    sink.apply_schema()
    items = [queue_item(i) for i in range(ITEMS)]
    sink.write([item.score for item in items], reviews=items)
    sink.close()
    port = free_port("127.0.0.1")
    env = {
        **os.environ,
        "EMOSTREAM_HOME": str(home),
        "EMOSTREAM_REGISTRY": str(trained_registry),
        "EMOSTREAM_WEB_PORT": str(port),
        "EMOSTREAM_REVIEW_TOKEN": REVIEW_TOKEN,
        "EMOSTREAM_WEB_TOKEN": ADMIN_TOKEN,
        "EMOSTREAM_REVIEWER": REVIEWER,
        "EMOSTREAM_REVIEW_OPINIONS": "2",
        "EMOSTREAM_REVIEW_GOLD_RATE": "1.0",  # every free slot a gold question, once some are loaded
    }
    log = tmp / "up.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([str(EMOSTREAM), "up"], env=env, stdout=handle, stderr=handle)
    directory = home / "clickhouse"  # the embedded engine's directory, which `up` owns
    deadline = time.monotonic() + 120
    while Endpoint.find(directory) is None or "review page: " not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    bootstrap = str(read_state(broker_file(home))["bootstrap"])  # type: ignore[index]
    yield Server(port, process, directory, bootstrap, "tweets.labels", log)
    terminate(process, 60, signal.SIGINT)


TOKENS: dict[str, str] = {}  # name -> personal token, as the operator handed them out


def operator(server: Server, method: str, path: str, body: object = None) -> tuple[int, object]:
    status, answer, _ = server.request(method, path, body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return status, answer


def add(server: Server, name: str, role: str = "reviewer") -> str:
    status, answer = operator(server, "POST", "/review/api/reviewers", {"name": name, "role": role})
    assert status == 201, answer
    token = answer["token"]  # type: ignore[index]
    assert answer["url"] == f"http://127.0.0.1:{server.port}/review?token={token}"  # type: ignore[index]
    TOKENS[name] = token
    return token


SESSIONS: dict[str, Browser] = {}  # one browser tab per reviewer, kept across the module's tests (as people do)


def as_reviewer(server: Server, name: str, fresh: bool = False) -> Browser:
    """The reviewer's tab, signed in with their personal link (``fresh``: a new sign-in)."""
    if fresh or name not in SESSIONS:
        SESSIONS[name] = server.login(token=TOKENS[name], reviewer=name)
    return SESSIONS[name]


def test_only_the_operator_adds_lists_and_revokes_reviewers(team: Server) -> None:
    kim = add(team, "kim")
    add(team, "lee")
    add(team, "ada", "adjudicator")
    status, listed = operator(team, "GET", "/review/api/reviewers")
    assert status == 200
    rows = {r["name"]: r for r in listed["reviewers"]}  # type: ignore[index]
    assert set(rows) == {"kim", "lee", "ada"} and rows["ada"]["role"] == "adjudicator"
    assert all(set(r) == {"name", "role", "added_at", "revoked"} for r in rows.values())  # no token, no hash
    stored = team.request("GET", "/review/api/reviewers", headers={"Authorization": f"Bearer {kim}"})
    assert stored[0] == 403  # a reviewer, even a named one, does not manage reviewers
    assert team.program("/review/api/reviewers", {"name": "eve"})[0] == 403  # nor does the shared token
    assert team.request("GET", "/review/api/reviewers")[0] == 401
    for body, status in (
        ({"name": "kim"}, 409),  # in use
        ({"name": REVIEWER}, 409),  # the shared token's name: their labels would be one name
        ({"name": "bad\nname"}, 400),
        ({"name": " "}, 400),
        ({"name": "x" * 65}, 400),
        ({"name": "zed", "role": "root"}, 400),
        ({"nom": "zed"}, 400),
    ):
        assert operator(team, "POST", "/review/api/reviewers", body)[0] == status, body
    assert operator(team, "POST", "/review/api/reviewers/revoke", {"name": "nobody"})[0] == 404


def test_a_personal_token_labels_under_its_name_whatever_the_request_claims(team: Server) -> None:
    kim = as_reviewer(team, "kim")
    claimed = team.login(f"&reviewer={REVIEWER}", token=TOKENS["kim"], reviewer="kim")  # the claim is dropped
    (item,) = kim.items(1)
    status, answer = kim.label(item, "joy")
    assert status == 200 and answer["label"]["reviewer"] == "kim"
    assert claimed.get("/review/api/session")["reviewer"] == "kim"
    claim = {**claimed.cookie, "X-CSRF-Token": claimed.csrf, "X-Reviewer": "lee"}
    status, answer, _ = team.request("POST", "/review/api/label", {**_ref(claimed.items(1)[0]), "label": "fear"}, claim)
    assert status == 200 and answer["label"]["reviewer"] == "kim"
    status, session = team.program("/review/api/session?reviewer=lee", token=TOKENS["kim"], X_Reviewer="lee")
    assert status == 200 and session["reviewer"] == "kim" and session["adjudicates"] is False
    names = {r["reviewer"] for r in team.labels_on_topic(expect=2)}
    assert names == {"kim"}
    assert query(team, "SELECT DISTINCT reviewer FROM review_labels") == [("kim",)]
    assert team.request("GET", "/review/team", headers=kim.cookie)[0] == 403  # not an adjudicator


def test_each_item_goes_to_two_different_reviewers_and_then_nobody(team: Server) -> None:
    kim, lee, ada = as_reviewer(team, "kim"), as_reviewer(team, "lee"), as_reviewer(team, "ada")
    done_by_kim = {tweet_id for (tweet_id,) in query(team, "SELECT tweet_id FROM review_opinions")}
    assert len(done_by_kim) == 2
    assert not done_by_kim & set(kim.window(ITEMS))  # never offered to who labelled it
    lee_window = lee.items(ITEMS)
    assert done_by_kim <= {item["tweet_id"] for item in lee_window}  # still wants a second opinion
    assert all("reviewer" not in item and "opinions" not in item for item in lee_window)  # blind
    (joyful,) = query(team, "SELECT tweet_id FROM review_opinions WHERE label = 'joy'")
    first = next(item for item in lee_window if item["tweet_id"] == joyful[0])
    assert lee.label(first, "joy")[0] == 200
    assert first["tweet_id"] not in set(ada.window(ITEMS)) | set(kim.window(ITEMS))  # two opinions: done
    status, answer = ada.label(first, "sadness")
    assert status == 409 and "already labelled by kim, lee" in answer["error"]
    assert kim.label(first, "joy")[0] == 200  # relabelling one's own opinion stays allowed
    assert lee.undo(first)[0] == 200  # lee withdraws: the item wants a second opinion again
    assert decisions(team)[first["tweet_id"]] == "single"
    assert lee.label(first, "joy")[0] == 200
    assert decisions(team)[first["tweet_id"]] == "unanimous"


def test_a_dispute_waits_for_an_adjudicator_and_retraining_takes_the_settled_label(
    team: Server, tmp_path: Path
) -> None:
    kim, lee, ada = as_reviewer(team, "kim"), as_reviewer(team, "lee"), as_reviewer(team, "ada")
    second = next(item for item in lee.items(ITEMS) if item["tweet_id"] in {t for (t,) in opinions(team, "kim")})
    assert lee.label(second, "anger")[0] == 200  # kim said fear: disputed
    decided = decisions(team)
    assert decided[second["tweet_id"]] == "disputed" and list(decided.values()).count("unanimous") == 1
    assert second["tweet_id"] not in snapshot(team, tmp_path)  # not trained on while disputed
    assert team.request("GET", "/review/api/disagreements", headers=lee.cookie)[0] == 403
    assert lee.post("/review/api/settle", {**_ref(second), "label": "fear"})[0] == 403
    (disputed,) = ada.get("/review/api/disagreements")["items"]
    assert disputed["item"]["tweet_id"] == second["tweet_id"]
    assert {(o["reviewer"], o["label"]) for o in disputed["opinions"]} == {("kim", "fear"), ("lee", "anger")}
    agreed = next(t for t, d in decided.items() if d == "unanimous")
    status, answer = ada.post("/review/api/settle", {**queued(int(agreed[1:])), "label": "anger"})
    assert status == 409 and "decided already (unanimous)" in answer["error"]  # a majority is not overruled
    assert ada.post("/review/api/settle", {**_ref(second), "label": "boredom"})[0] == 400
    assert ada.post("/review/api/settle", {**queued(ITEMS + 1), "label": "joy"})[0] == 404
    status, answer = ada.post("/review/api/settle", {**_ref(second), "label": "fear"})
    assert status == 200 and answer["was"] == "disputed"
    assert ada.get("/review/api/disagreements")["items"] == []
    labels = snapshot(team, tmp_path)
    assert labels[second["tweet_id"]] == ("fear", "adjudicated") and labels[agreed] == ("joy", "unanimous")
    assert kim.undo(second)[0] == 409  # settled: the opinions behind it stay
    assert query(team, "SELECT adjudicator FROM review_adjudications") == [("ada",)]


def test_agreement_is_on_the_team_page_and_in_sql(team: Server) -> None:
    ada = as_reviewer(team, "ada")
    page = team.request("GET", "/review/team", headers=ada.cookie)
    assert page[0] == 200 and "/review/static/team.js" in page[1]
    figures = ada.get("/review/api/team")
    assert figures["opinions_per_item"] == 2 and figures["disputed"] == 0 and figures["adjudicated"] == 1
    overall = figures["overall"]
    # two items with two opinions each: (joy, joy) and (fear, anger): nominal alpha by hand
    # n = 4 values, D_o = (1/4)(0 + 2) = 0.5, D_e = (16 - (4 + 1 + 1)) / (4 * 3) = 10/12, alpha = 1 - 0.6 = 0.4
    assert overall["items"] == 2 and overall["alpha"] == pytest.approx(0.4)
    assert query(team, "SELECT round(alpha, 6) FROM review_agreement WHERE label = ''") == [(0.4,)]
    by_reviewer = {r["reviewer"]: r for r in figures["reviewers"]}
    assert by_reviewer["kim"]["shared"] == 2 and by_reviewer["kim"]["agreement"] == pytest.approx(0.5)


GOLD = [(f"g{i}", f"a gold question, number {i}", LABELS[i % 6]) for i in range(6)]


def test_gold_questions_look_like_any_item_measure_accuracy_and_weigh_the_labels(
    team: Server, trained_registry: Path, tmp_path: Path
) -> None:
    file = tmp_path / "gold.csv"
    with file.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "text", "label", "brand"), *((i, t, lab, "acme") for i, t, lab in GOLD)])
    env = {"EMOSTREAM_HOME": str(team.directory.parent), "EMOSTREAM_REGISTRY": str(trained_registry)}
    loaded = run_cli("review", "gold", file, env=env)
    assert loaded.returncode == 0 and "6 gold questions loaded" in loaded.stderr, loaded.stderr
    add(team, "gus")
    add(team, "bad")
    gus, bad = as_reviewer(team, "gus"), as_reviewer(team, "bad")
    window = gus.items(ITEMS)  # every free slot a gold question (the rate is 1 here), real items in the rest
    gold = {g[0]: g for g in GOLD}
    shown = [item for item in window if item["tweet_id"] in gold]
    real = [item for item in window if item["tweet_id"] not in gold]
    assert len(shown) == 6 and 1 <= len(real) <= ITEMS - 6  # all of them, within the window's size
    assert all(set(item) == set(real[0]) for item in shown)  # the same fields as any item
    serving = ModelRegistry(trained_registry).require_current().name
    for item in shown:  # scored by the serving model, with a reason of the worker's form
        assert abs(sum(item["probabilities"].values()) - 1) < 1e-3 and item["model_version"] == serving
        assert re.fullmatch(r"confidence \d\.\d\d < \d\.\d\d", item["reason"]), item["reason"]
    for n, item in enumerate(shown):  # gus gets five of six right
        right = gold[item["tweet_id"]][2]
        assert gus.label(item, right if n else next(lab for lab in LABELS if lab != right))[0] == 200
    assert not {item["tweet_id"] for item in gus.items(ITEMS)} & set(gold)  # each answered once
    for item in bad.items(6):  # bad gets every one wrong
        assert item["tweet_id"] in gold
        assert bad.label(item, next(lab for lab in LABELS if lab != gold[item["tweet_id"]][2]))[0] == 200
    figures = as_reviewer(team, "ada").get("/review/api/team")
    accuracy = {g["reviewer"]: g for g in figures["gold"]}
    assert (accuracy["gus"]["answered"], accuracy["gus"]["correct"]) == (6, 5) and not accuracy["gus"]["flagged"]
    assert accuracy["bad"]["accuracy"] == 0 and accuracy["bad"]["flagged"] and accuracy["bad"]["weight"] == 0
    assert figures["gold_questions"] == 6
    # gold answers are not opinions: no item of the queue, no agreement figure, no training example
    assert not {t for (t,) in query(team, "SELECT tweet_id FROM review_opinions")} & set(gold)
    assert not set(snapshot(team, tmp_path)) & set(gold)
    # a real item gus and bad label differently: bad's opinion weighs nothing, so gus's label is the majority
    item = real[0]
    assert gus.label(item, "love")[0] == 200 and bad.label(item, "anger")[0] == 200
    assert decisions(team)[item["tweet_id"]] == "majority"
    label, decision = snapshot(team, tmp_path)[item["tweet_id"]]
    assert (label, decision) == ("love", "majority")
    (weight,) = query(team, f"SELECT weight FROM review_decisions WHERE tweet_id = '{item['tweet_id']}'")[0]
    assert weight == pytest.approx(5 / 6)


def test_revoking_a_reviewer_ends_their_sessions_at_once(team: Server) -> None:
    lee = as_reviewer(team, "lee", fresh=True)
    assert lee.get("/review/api/session")["reviewer"] == "lee"
    assert operator(team, "POST", "/review/api/reviewers/revoke", {"name": "lee"})[0] == 200
    assert team.request("GET", "/review/api/items", headers=lee.cookie)[0] == 401  # the very next request
    assert team.program("/review/api/items", token=TOKENS["lee"])[0] == 401
    assert team.request("GET", f"/review?token={TOKENS['lee']}")[0] == 401
    old = TOKENS["lee"]
    add(team, "lee")  # back, with a new token: the old one and its sessions stay dead
    assert team.program("/review/api/items", token=old)[0] == 401
    assert team.request("GET", "/review/api/items", headers=lee.cookie)[0] == 401
    assert as_reviewer(team, "lee", fresh=True).get("/review/api/session")["reviewer"] == "lee"
    assert ("lee",) in query(team, "SELECT DISTINCT reviewer FROM review_labels")  # their labels stay


def test_the_operator_command_adds_lists_and_revokes_on_the_table(tmp_path: Path) -> None:
    """Without a running `up` (or on a ClickHouse server) `emostream reviewers` writes the table itself."""
    env = {"EMOSTREAM_HOME": str(tmp_path / "home"), "EMOSTREAM_REVIEWER": REVIEWER}
    added = run_cli("reviewers", "add", "kim", "--adjudicator", env=env)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().rsplit("token=", 1)[1]
    assert len(token) >= 40 and token in added.stderr
    again = run_cli("reviewers", "add", "kim", env=env)
    assert again.returncode == 2 and "revoke them first" in again.stderr
    assert run_cli("reviewers", "add", REVIEWER, env=env).returncode == 2
    listed = run_cli("reviewers", "list", env=env)
    assert listed.returncode == 0 and "kim" in listed.stdout and "adjudicator" in listed.stdout
    assert "active" in listed.stdout and token not in listed.stdout
    assert run_cli("reviewers", "revoke", "kim", env=env).returncode == 0
    assert "revoked" in run_cli("reviewers", "list", env=env).stdout
    missing = run_cli("reviewers", "revoke", "nobody", env=env)
    assert missing.returncode == 2 and "'nobody' is not a reviewer" in missing.stderr


def _ref(item: dict) -> dict[str, str]:
    return {"tweet_id": item["tweet_id"], "text_sha256": item["text_sha256"]}


def query(server: Server, sql: str) -> list[tuple]:
    """Read-only SQL as the operator runs it (`emostream sql`): through the running `up`, which owns chDB."""
    endpoint = Endpoint.find(server.directory)
    assert endpoint is not None
    return [tuple(row) for row in endpoint.sql(sql).rows]


def decisions(server: Server) -> dict[str, str]:
    return dict(query(server, "SELECT tweet_id, decision FROM review_decisions"))


def opinions(server: Server, reviewer: str) -> list[tuple]:
    return query(server, f"SELECT tweet_id FROM review_opinions WHERE reviewer = '{reviewer}'")


def snapshot(server: Server, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """What a retraining round trains on now, fetched and read the way `emostream retrain` does it:
    tweet id -> (label, decision)."""
    from emostream.retraining import export_snapshot
    from emostream.trainer.retrain import read_snapshot

    path, _ = export_snapshot(Settings(home=server.directory.parent).resolved_clickhouse_dsn(), tmp_path)
    return {row.tweet_id: (row.label, row.decision) for row in read_snapshot(path)}
