"""Reading tweets for `emostream ingest`: JSONL and CSV, field mapping, bad lines with their numbers."""

from pathlib import Path

from emostream.schemas import Tweet
from emostream.stream.kafka.ingest import FieldMap, read_tweets, replay_tweets


def test_jsonl_reports_each_bad_line_and_keeps_the_good_ones(tmp_path: Path) -> None:
    file = tmp_path / "t.jsonl"
    file.write_bytes(
        b'{"id": "1", "text": "fine"}\n'
        b"not json\n"
        b"\n"
        b'{"id": "2"}\n'
        b'{"id": "3", "text": "caf\xff"}\n'
        b'{"id": "4", "text": "also fine", "created_at": "2026-01-01T10:00:00+01:00"}\n'
    )
    items = list(read_tweets(str(file), FieldMap()))
    good = {n: item.id for n, item in items if isinstance(item, Tweet)}
    bad = {n: item for n, item in items if isinstance(item, str)}
    assert good == {1: "1", 6: "4"}
    assert set(bad) == {2, 4, 5}
    assert "not JSON" in bad[2] and "text: Field required" in bad[4] and "not UTF-8" in bad[5]


def test_csv_with_a_field_mapping(tmp_path: Path) -> None:
    file = tmp_path / "t.csv"
    file.write_text('tweet_id,body,company\n7,"hello, world",acme\n8,,globex\n9,"multi\nline",initech\n')
    items = list(read_tweets(str(file), FieldMap(id="tweet_id", text="body", brand="company")))
    assert [(n, item.id, item.brand) for n, item in items if isinstance(item, Tweet)] == [
        (2, "7", "acme"),
        (4, "9", "initech"),
    ]
    assert [(n, item) for n, item in items if isinstance(item, str)] == [(3, "text: Field required")]


def test_replay_is_deterministic_per_run_id() -> None:
    first = list(replay_tweets(["a", "b", "c"], "test", ["x", "y"], "run1"))
    again = list(replay_tweets(["a", "b", "c"], "test", ["x", "y"], "run1"))
    assert [t.id for t in first] == ["run1-test-00000", "run1-test-00001", "run1-test-00002"]
    assert [t.brand for t in first] == [t.brand for t in again]
