"""The review page end to end in a real headless browser (Debian's chromium, driven by Selenium).

`emostream up` with a tiny model and every tweet sent to review; tweets ingested as a user would; then a
reviewer labels with the keyboard, skips, undoes, and the labels are checked where they must land:
`review_labels` (through `emostream sql`) and the `tweets.labels` topic, each with the hash of the text the
page showed, under the server's reviewer name (the page offers no way to change it, and a `&reviewer=`
in the sign-in URL is ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emostream.stream.discovery import broker_file, endpoint_file, read_state
from emostream.stream.web.auth import read_token, token_file
from tests.conftest import EMOSTREAM, run_cli
from tests.test_streaming import read_topic

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
URL = re.compile(r"review page: (http://127\.0\.0\.1:\d+/review\?token=\S+)")


@pytest.fixture
def browsers() -> Iterator[list]:
    if os.environ.get("EMOSTREAM_SKIP_BROWSER"):
        pytest.skip("EMOSTREAM_SKIP_BROWSER is set")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make test` installs them (apt-get)")
    opened: list = []
    yield opened
    for driver in opened:
        driver.quit()


def open_browser(opened: list) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    opened.append(driver)
    return driver


@contextmanager
def started_up(
    trained_registry: Path, small_data: Path, tmp_path: Path, **settings: str
) -> Iterator[tuple[str, dict[str, str], str]]:
    """`emostream up` with every tweet sent to review and 30 validation tweets ingested: the page's URL
    (with the generated review token), the settings and the broker's address."""
    env = {
        "EMOSTREAM_HOME": str(tmp_path / "home"),
        "EMOSTREAM_REGISTRY": str(trained_registry),
        "EMOSTREAM_REVIEW_THRESHOLD": "1.0",  # every tweet goes to review
        "EMOSTREAM_PARTITIONS": "2",
        "EMOSTREAM_REVIEWER": "ana",
        **settings,
    }
    log = tmp_path / "up.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [str(EMOSTREAM), "up"], env={**os.environ, **env}, stdout=handle, stderr=handle, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while not (match := URL.search(log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        texts = [line.rpartition(";")[0] for line in (small_data / "val.txt").read_text().splitlines()][:30]
        tweets = tmp_path / "tweets.jsonl"
        tweets.write_text(
            "".join(json.dumps({"id": f"b{i:02d}", "text": t, "brand": "acme"}) + "\n" for i, t in enumerate(texts))
        )
        assert run_cli("ingest", tweets, env=env).returncode == 0
        bootstrap = str(read_state(broker_file(tmp_path / "home"))["bootstrap"])  # type: ignore[index]
        yield match.group(1), env, bootstrap
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def up(trained_registry: Path, small_data: Path, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], str]]:
    with started_up(trained_registry, small_data, tmp_path) as running:
        yield running


def current_text(driver: object) -> tuple[str, str, str] | None:
    """The current item as the page shows it: its id, its text and the text hash it will send back."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        card = driver.find_element("css selector", "[data-tweet-id][data-current]")  # type: ignore[attr-defined]
        text = card.find_element("css selector", ".tweet").text
        return card.get_attribute("data-tweet-id"), text, card.get_attribute("data-text-sha256")
    except (StaleElementReferenceException, NoSuchElementException):
        return None


def current_id(driver: object) -> str | None:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements("css selector", "[data-tweet-id][data-current]")  # type: ignore[attr-defined]
        return found[0].get_attribute("data-tweet-id") if found else None
    except StaleElementReferenceException:
        return None


def wait_until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def press(driver: object, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()  # type: ignore[arg-type]


def sql_status(base: str, token: str | None) -> int:
    request = urllib.request.Request(
        f"{base}/sql", data=b"SELECT 1", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_reviewer_labels_skips_and_undoes_with_the_keyboard(
    up: tuple[str, dict[str, str], str], browsers: list, tmp_path: Path
) -> None:
    url, env, bootstrap = up
    stranger = open_browser(browsers)
    stranger.get(url.split("?")[0])  # type: ignore[attr-defined]
    assert "Sign-in needed" in stranger.page_source  # type: ignore[attr-defined]
    assert stranger.find_elements("css selector", "[data-tweet-id]") == []  # type: ignore[attr-defined]

    driver = open_browser(browsers)
    deadline = time.monotonic() + 60
    while True:  # the queue fills as the worker scores the ingested tweets
        driver.get(url + "&reviewer=mallory")  # type: ignore[attr-defined]  # a name the server ignores
        time.sleep(1)
        if current_id(driver) or time.monotonic() > deadline:
            break
    assert driver.current_url.endswith("/review")  # type: ignore[attr-defined]  # the token left the address bar
    who = driver.find_element("id", "reviewer")  # type: ignore[attr-defined]
    assert who.text == "ana" and who.tag_name == "span"  # the server's name, and nothing to click to change it
    assert driver.find_elements("css selector", "header button") == []  # type: ignore[attr-defined]
    given: list[tuple[str, str]] = []
    hashes: dict[str, str] = {}
    for key, label in (("1", "sadness"), ("2", "joy"), ("0", "none")):
        shown = current_id(driver)
        assert shown is not None
        item = current_text(driver)
        assert item is not None and item[0] == shown
        assert item[2] == hashlib.sha256(item[1].encode()).hexdigest()  # the hash of the text on the screen
        hashes[shown] = item[2]
        press(driver, key)
        wait_until(lambda shown=shown: current_id(driver) not in (None, shown))
        given.append((shown, label))
    skipped = current_id(driver)
    press(driver, "s")
    wait_until(lambda: current_id(driver) not in (None, skipped))
    wait_until(lambda: len(driver.find_elements("css selector", ".history .status.saved")) == 3)  # type: ignore[attr-defined]
    press(driver, "u")  # undo the last label: that tweet comes back, first
    wait_until(lambda: current_id(driver) == given[-1][0])
    wait_until(lambda: "Labelled 2" in driver.find_element("id", "counts").text)  # type: ignore[attr-defined]
    assert driver.find_elements("css selector", ".history .status.undone")  # type: ignore[attr-defined]
    driver.save_screenshot(str(tmp_path / "review-page.png"))  # type: ignore[attr-defined]

    result = run_cli(
        "sql",
        "--format",
        "csv",
        "SELECT tweet_id, label, reviewer, retracted, text_sha256 FROM review_labels ORDER BY labelled_at",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.strip().splitlines()[1:]]
    expected = [[tweet, label, "ana", "false", hashes[tweet]] for tweet, label in given]
    expected.append([given[-1][0], "none", "ana", "true", hashes[given[-1][0]]])
    assert rows == expected
    assert skipped not in {tweet for tweet, _ in given}
    # the reviewer's token opens the pages, not the operator's routes of the same server
    base, _, token = url.partition("/review?token=")
    assert sql_status(base, token) == 403
    assert sql_status(base, read_token(token_file(endpoint_file(Path(env["EMOSTREAM_HOME"]) / "clickhouse")))) == 200
    on_topic = [json.loads(value) for value in read_topic(bootstrap, "tweets.labels", expect=4)]
    assert sorted((r["tweet_id"], r["label"], r["retracted"], r["text_sha256"]) for r in on_topic) == sorted(
        (tweet, label, retracted == "true", sha) for tweet, label, _, retracted, sha in rows
    )


def shown_ids(driver: object) -> set[str]:
    """Every item on the page: the current one and those up next."""
    nodes = driver.find_elements("css selector", "#current [data-tweet-id], #queue [data-tweet-id]")  # type: ignore[attr-defined]
    return {node.get_attribute("data-tweet-id") for node in nodes}


def test_two_named_reviewers_label_the_same_items_blind_and_agreement_shows_on_the_team_page(
    trained_registry: Path, small_data: Path, tmp_path: Path, browsers: list
) -> None:
    """Two opinions per item, two reviewers with their own links (added by the operator's command), two
    browsers: each sees only items they have not labelled, their names (not the one the URL claims) are in
    review_labels, the item they disagree on waits on the team page, where the agreement shows."""
    with started_up(trained_registry, small_data, tmp_path, EMOSTREAM_REVIEW_OPINIONS="2") as (url, env, _):
        base = url.partition("/review?")[0]
        links = {}
        for name in ("kim", "lee"):
            added = run_cli("reviewers", "add", name, env=env)
            assert added.returncode == 0, added.stderr
            links[name] = added.stdout.strip()
            assert links[name].startswith(f"{base}/review?token=")
        kim, lee = open_browser(browsers), open_browser(browsers)
        given: dict[str, list[str]] = {"kim": [], "lee": []}
        kim.get(links["kim"] + "&reviewer=mallory")  # type: ignore[attr-defined]  # a name the server ignores
        deadline = time.monotonic() + 60
        while current_id(kim) is None:  # the queue fills as the worker scores the ingested tweets
            assert time.monotonic() < deadline, "no item came"
            time.sleep(1)
            kim.get(f"{base}/review")  # type: ignore[attr-defined]
        assert kim.find_element("id", "reviewer").text == "kim"  # type: ignore[attr-defined]
        for key in ("1", "1", "2"):  # sadness, sadness, joy
            shown = current_id(kim)
            assert shown is not None
            press(kim, key)
            wait_until(lambda shown=shown: current_id(kim) not in (None, shown))
            given["kim"].append(shown)
        wait_until(lambda: len(kim.find_elements("css selector", ".history .status.saved")) == 3)  # type: ignore[attr-defined]
        lee.get(links["lee"] + "&reviewer=kim")  # type: ignore[attr-defined]
        wait_until(lambda: current_id(lee) is not None)
        assert lee.find_element("id", "reviewer").text == "lee"  # type: ignore[attr-defined]
        # the most uncertain items first: what kim labelled (no longer on kim's screen) wants lee's opinion
        assert set(given["kim"]) <= shown_ids(lee) and not set(given["kim"]) & shown_ids(kim)
        for key in ("1", "2", "2"):  # sadness, joy, joy: agrees, disagrees, agrees
            shown = current_id(lee)
            assert shown is not None and shown not in given["lee"]
            press(lee, key)
            wait_until(lambda shown=shown: current_id(lee) not in (None, shown))
            given["lee"].append(shown)
        wait_until(lambda: len(lee.find_elements("css selector", ".history .status.saved")) == 3)  # type: ignore[attr-defined]
        assert given["lee"] == given["kim"]  # the same three items, in the queue's order
        for driver in (kim, lee):  # done: two opinions each, so on nobody's screen any more
            driver.get(f"{base}/review")  # type: ignore[attr-defined]
            wait_until(lambda driver=driver: current_id(driver) is not None)
            assert not shown_ids(driver) & set(given["kim"])
        lee.save_screenshot(str(tmp_path / "review-page-lee.png"))  # type: ignore[attr-defined]
        result = run_cli("sql", "--format", "csv", "SELECT reviewer, tweet_id, label FROM review_labels", env=env)
        assert result.returncode == 0, result.stderr
        rows = {tuple(line.split(",")) for line in result.stdout.strip().splitlines()[1:]}
        labels = dict(zip("12", ("sadness", "joy"), strict=True))
        expected = {("kim", t, labels[k]) for t, k in zip(given["kim"], "112", strict=True)}
        expected |= {("lee", t, labels[k]) for t, k in zip(given["lee"], "122", strict=True)}
        assert rows == expected  # the names are the links', not the ones the URLs claimed

        admin = open_browser(browsers)  # the operator, with the token `up` wrote beside its data
        token = read_token(token_file(endpoint_file(Path(env["EMOSTREAM_HOME"]) / "clickhouse")))
        admin.get(f"{base}/review/team?token={token}")  # type: ignore[attr-defined]
        # (sadness, sadness), (sadness, joy), (joy, joy): n = 6, D_o = 2/6, D_e = (36 - 18)/30, alpha = 4/9
        wait_until(lambda: "0.44" in admin.find_element("id", "agreement").text)  # type: ignore[attr-defined]
        disputes = admin.find_elements("css selector", ".dispute")  # type: ignore[attr-defined]
        assert [d.get_attribute("data-tweet-id") for d in disputes] == [given["kim"][1]]
        assert "kim" in disputes[0].text and "lee" in disputes[0].text  # the adjudicator sees who said what
        admin.save_screenshot(str(tmp_path / "team-page.png"))  # type: ignore[attr-defined]
        disputes[0].find_element("css selector", "button[title='settle as joy']").click()
        wait_until(lambda: not admin.find_elements("css selector", ".dispute"))  # type: ignore[attr-defined]
        decided = run_cli("sql", "--format", "csv", "SELECT tweet_id, decision FROM review_decisions", env=env)
        assert dict(line.split(",") for line in decided.stdout.strip().splitlines()[1:]) == {
            given["kim"][0]: "unanimous",
            given["kim"][1]: "adjudicated",
            given["kim"][2]: "unanimous",
        }
