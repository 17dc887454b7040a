"""The review team's agreement on the real engine: the views of 007_review_agreement.sql against reference
implementations (the ``krippendorff`` package, scikit-learn's kappa) and against counts made by hand.

``review_opinions`` is made here as a plain table of the columns the views read (its real definition, a
view over the label history, is not what is under test); the opinions are synthetic."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import krippendorff
import numpy as np
import pytest
from clickhouse_connect.driver.client import Client
from sklearn.metrics import cohen_kappa_score

from emostream.schemas import LABELS, NO_EMOTION
from emostream.settings import Settings
from emostream.stream.clickhouse.client import open_client
from emostream.stream.clickhouse.ddl import DDL_DIR, file_statements
from emostream.stream.review.agreement import TeamAgreement, team_agreement

pytestmark = pytest.mark.integration

Opinion = tuple[str, str, str, str]  # tweet_id, text_sha256, reviewer, label
VALUES = [*LABELS, NO_EMOTION]
ODD = 'O\'Brien "Zoë" \\ 😀 ; --'  # quotes, a backslash, unicode, SQL-ish punctuation
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = open_client(Settings(home=tmp_path_factory.mktemp("agreement") / "home").resolved_clickhouse_dsn())
    client.command(
        "CREATE TABLE review_opinions (tweet_id String, text_sha256 String, reviewer String, label String, "
        "labelled_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY (tweet_id, text_sha256, reviewer)"
    )
    for statement in file_statements(DDL_DIR / "007_review_agreement.sql"):
        client.command(statement)
        client.command(statement)  # idempotent: applied at every start
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def client(engine: Client) -> Client:
    engine.command("TRUNCATE TABLE review_opinions")
    return engine


def put(client: Client, opinions: Sequence[Opinion]) -> None:
    keys = [(o[0], o[1], o[2]) for o in opinions]
    assert len(set(keys)) == len(keys), "one opinion per item and reviewer"
    if opinions:
        client.insert(
            "review_opinions",
            [[*o, START + timedelta(seconds=i)] for i, o in enumerate(opinions)],
            column_names=["tweet_id", "text_sha256", "reviewer", "label", "labelled_at"],
        )


def random_opinions(seed: int, reviewers: int, items: int, missing: float) -> list[Opinion]:
    """Items with a true label each, reviewers who mostly find it; some opinions missing, so some items have
    one opinion or none. Tweet ids repeat with another text: a second item."""
    rng = random.Random(seed)
    names = [f"r{i}" for i in range(reviewers - 1)] + [ODD]
    weights = [5, 4, 2, 2, 1, 1, 3]  # skewed, as real labels are
    opinions: list[Opinion] = []
    for i in range(items):
        tweet_id, text = f"t{i // 2}", f"{i % 2:064x}"
        truth = rng.choices(VALUES, weights)[0]
        for name in names:
            if rng.random() < missing:
                continue
            label = truth if rng.random() < 0.7 else rng.choices(VALUES, weights)[0]
            opinions.append((tweet_id, text, name, label))
    return opinions


def reliability(opinions: Sequence[Opinion], code: dict[str, float]) -> np.ndarray:
    """Reviewers x items, the label's code or NaN: the krippendorff package's input."""
    reviewers = sorted({o[2] for o in opinions})
    items = sorted({(o[0], o[1]) for o in opinions})
    data = np.full((len(reviewers), len(items)), np.nan)
    for tweet_id, text, reviewer, label in opinions:
        data[reviewers.index(reviewer), items.index((tweet_id, text))] = code[label]
    return data


def by_item(opinions: Sequence[Opinion]) -> dict[tuple[str, str], list[Opinion]]:
    items: dict[tuple[str, str], list[Opinion]] = {}
    for opinion in opinions:
        items.setdefault((opinion[0], opinion[1]), []).append(opinion)
    return items


def rows(client: Client) -> dict[str, tuple[Any, ...]]:
    result = client.query("SELECT label, alpha, items, opinions, reviewers, observed_agreement FROM review_agreement")
    return {row[0]: tuple(row[1:]) for row in result.result_rows}


@pytest.mark.parametrize(
    ("seed", "reviewers", "items", "missing"),
    [(1, 2, 60, 0.2), (2, 3, 80, 0.4), (3, 5, 50, 0.5), (4, 8, 40, 0.7), (5, 4, 30, 0.0)],
)
def test_alpha_overall_and_per_label_is_krippendorffs(
    client: Client, seed: int, reviewers: int, items: int, missing: float
) -> None:
    opinions = random_opinions(seed, reviewers, items, missing)
    put(client, opinions)
    pairable = [o for group in by_item(opinions).values() if len(group) >= 2 for o in group]
    if missing:  # else complete data: every reviewer on every item
        assert len(pairable) < len(opinions), "the data set should hold items with one opinion"
    got = rows(client)
    labels = sorted({o[3] for o in opinions})
    assert sorted(got) == ["", *labels]

    expected = krippendorff.alpha(
        reliability_data=reliability(opinions, {v: float(i) for i, v in enumerate(VALUES)}),
        level_of_measurement="nominal",
    )
    alpha, n_items, n_opinions, n_reviewers, observed = got[""]
    assert alpha == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert n_items == len({(o[0], o[1]) for o in pairable})
    assert n_opinions == len(pairable)
    assert n_reviewers == len({o[2] for o in pairable})
    pairs = agreeing = 0
    for group in by_item(pairable).values():
        for a, b in itertools.combinations(group, 2):
            pairs += 1
            agreeing += a[3] == b[3]
    assert observed == pytest.approx(agreeing / pairs)

    for label in labels:
        binary = krippendorff.alpha(
            reliability_data=reliability(opinions, {v: float(v == label) for v in VALUES}),
            level_of_measurement="nominal",
        )
        alpha, *counts, observed = got[label]
        assert alpha == pytest.approx(binary, rel=1e-9, abs=1e-12), label
        assert counts == [n_items, n_opinions, n_reviewers]
        disagreeing = sum(
            (a[3] == label) != (b[3] == label)
            for group in by_item(pairable).values()
            for a, b in itertools.combinations(group, 2)
        )
        assert observed == pytest.approx(1 - disagreeing / pairs)


def test_an_item_with_one_opinion_does_not_count(client: Client) -> None:
    opinions = random_opinions(7, 3, 40, 0.3)
    put(client, opinions)
    before = rows(client)
    put(client, [(f"alone{i}", "0" * 64, "r0", label) for i, label in enumerate(VALUES)])  # single opinions
    put(client, [("only-here", "1" * 64, "r1", "a label of its own")])
    after = rows(client)
    assert before.keys() <= after.keys()
    for label, row in before.items():
        assert after[label] == pytest.approx(row, rel=1e-12), label
    assert after["a label of its own"] == (None, *before[""][1:4], 1.0)  # on no pairable item: undefined


def test_perfect_agreement_is_one_and_no_variation_is_undefined(client: Client) -> None:
    rng = random.Random(11)
    perfect = [
        (f"t{i}", "0" * 64, reviewer, VALUES[i % 3]) for i in range(30) for reviewer in rng.sample(["a", "b", "c"], 2)
    ]
    put(client, perfect)
    got = rows(client)
    assert got[""] == (1.0, 30, 60, 3, 1.0)
    assert all(got[label][0] == 1.0 for label in VALUES[:3])

    client.command("TRUNCATE TABLE review_opinions")
    put(client, [(t, s, r, "joy") for t, s, r, _ in perfect])
    got = rows(client)
    assert got == {"": (None, 30, 60, 3, 1.0), "joy": (None, 30, 60, 3, 1.0)}
    team = team_agreement(client, min_shared=1)
    assert team.overall.alpha is None and team.labels[0].alpha is None
    assert all(pair.kappa is None for pair in team.pairs) and team.pairs
    assert json.loads(json.dumps(team.as_json(), allow_nan=False))["overall"]["alpha"] is None


def test_no_opinions_still_give_the_overall_row(client: Client) -> None:
    result = client.query("SELECT * FROM review_agreement").result_rows
    assert len(result) == 1
    label, alpha, items, opinions, reviewers, observed = result[0]
    assert (label, alpha, items, opinions, reviewers) == ("", None, 0, 0, 0)
    assert math.isnan(observed)
    assert client.query("SELECT * FROM review_reviewer_agreement").result_rows == []
    team = team_agreement(client)
    assert team.as_json() == {
        "overall": {
            "label": "",
            "alpha": None,
            "items": 0,
            "opinions": 0,
            "reviewers": 0,
            "observed_agreement": None,
        },
        "labels": [],
        "reviewers": [],
        "pairs": [],
        "min_shared": 5,
    }


def test_the_views_have_the_documented_columns(client: Client) -> None:
    def columns(view: str) -> list[tuple[str, str]]:
        return [
            (str(name), str(kind))
            for name, kind in client.query(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
                "ORDER BY position",
                parameters={"t": view},
            ).result_rows
        ]

    assert columns("review_agreement") == [
        ("label", "String"),
        ("alpha", "Nullable(Float64)"),
        ("items", "UInt64"),
        ("opinions", "UInt64"),
        ("reviewers", "UInt64"),
        ("observed_agreement", "Float64"),
    ]
    assert columns("review_reviewer_agreement") == [
        ("reviewer", "String"),
        ("labelled", "UInt64"),
        ("shared", "UInt64"),
        ("agreement", "Nullable(Float64)"),
    ]


def test_each_reviewers_agreement_by_hand(client: Client) -> None:
    h = "ab" * 32
    put(
        client,
        [
            ("1", h, "ana", "joy"),
            ("1", h, ODD, "joy"),
            ("1", h, "cy", "fear"),
            ("2", h, "ana", "sadness"),
            ("2", h, ODD, "joy"),
            ("2", "cd" * 32, "cy", "sadness"),  # same tweet, another text: another item, alone
            ("3", h, "ana", "joy"),
            ("4", h, "dee", "love"),
        ],
    )
    got = {row[0]: row[1:] for row in client.query("SELECT * FROM review_reviewer_agreement").result_rows}
    # ana: item 1 agrees with ODD, not with cy; item 2 disagrees with ODD; item 3 alone: 1 of 3 pairs
    assert got["ana"] == (3, 2, pytest.approx(1 / 3))
    assert got[ODD] == (2, 2, pytest.approx(1 / 3))
    assert got["cy"] == (2, 1, 0.0)
    assert got["dee"] == (1, 0, None)
    # items 1 and 2: 4 pairs, 1 agreeing; joy vs the rest: item 1 two of three pairs disagree, item 2 one
    overall = rows(client)
    assert overall[""][1:] == (2, 5, 3, pytest.approx(1 / 4))
    assert overall["joy"][4] == pytest.approx(1 / 4)
    assert overall["sadness"][4] == pytest.approx(3 / 4)
    team = team_agreement(client, min_shared=1)
    assert [(r.reviewer, r.labelled, r.shared) for r in team.reviewers] == sorted(
        [("ana", 3, 2), (ODD, 2, 2), ("cy", 2, 1), ("dee", 1, 0)]
    )


@pytest.mark.parametrize("min_shared", [1, 5, 20])
def test_pairwise_kappa_is_sklearns(client: Client, min_shared: int) -> None:
    opinions = random_opinions(21, 5, 70, 0.5)
    opinions.append(("t0", f"{0:064x}", ODD + "'", 'it\'s "odd" ünï'))  # a label with quotes and unicode
    put(client, opinions)
    labels: dict[str, dict[tuple[str, str], str]] = {}
    for tweet_id, text, reviewer, label in opinions:
        labels.setdefault(reviewer, {})[(tweet_id, text)] = label
    expected = {}
    for first, second in itertools.combinations(sorted(labels), 2):
        shared = sorted(labels[first].keys() & labels[second].keys())
        if len(shared) >= min_shared:
            expected[(first, second)] = (
                len(shared),
                cohen_kappa_score([labels[first][i] for i in shared], [labels[second][i] for i in shared]),
            )
    team = team_agreement(client, min_shared=min_shared)
    assert isinstance(team, TeamAgreement)
    got = {(p.first, p.second): (p.items, p.kappa) for p in team.pairs}
    assert sorted(got) == sorted(expected)
    for pair, (items, kappa) in expected.items():
        assert got[pair][0] == items
        assert got[pair][1] == (None if math.isnan(kappa) else pytest.approx(kappa, rel=1e-9, abs=1e-12)), pair
    if min_shared == 1:
        assert any(ODD + "'" in pair for pair in got)
        assert 'it\'s "odd" ünï' in {row.label for row in team.labels}
    assert expected
    if min_shared == 20:
        assert len(got) < len(list(itertools.combinations(labels, 2)))  # some pairs share too few items
    as_json = team.as_json()
    assert json.loads(json.dumps(as_json, allow_nan=False)) == as_json
    assert as_json["overall"] == {
        "label": "",
        "alpha": team.overall.alpha,
        "items": team.overall.items,
        "opinions": team.overall.opinions,
        "reviewers": team.overall.reviewers,
        "observed_agreement": team.overall.observed_agreement,
    }
    assert as_json["pairs"][0].keys() == {"first", "second", "items", "kappa"}
    assert as_json["min_shared"] == min_shared


def test_min_shared_must_be_positive(client: Client) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        team_agreement(client, min_shared=0)
