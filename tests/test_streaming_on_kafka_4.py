"""The streaming core of ``tests/test_streaming.py`` on Apache Kafka 4 (a KRaft node from the Maven Central jars).

The tests are imported, not copied: the same code runs here with ``core_broker`` set to Apache Kafka 4. A file
of its own so that pytest-xdist's ``--dist loadfile`` runs it beside the tansu run, not after it.
"""

from __future__ import annotations

import pytest

from tests.test_streaming import (  # noqa: F401  # collected here, on this file's broker
    any_stack,
    test_a_worker_whose_writes_fail_stops_in_time_and_commits_nothing,
    test_every_tweet_lands_once_with_the_scores_predict_gives,
    test_malformed_records_go_to_the_dead_letter_topic_and_scoring_goes_on,
    test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice,
    test_two_workers_share_the_partitions,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def core_broker(kafka_4: str) -> str:
    """Apache Kafka 4 instead of tansu."""
    return kafka_4


def test_this_file_runs_the_whole_streaming_core() -> None:
    """A test added to the core in test_streaming.py must be imported here and in the 3.9 file too."""
    import tests.test_streaming as core
    import tests.test_streaming_on_kafka_3_9 as on_3_9

    for name in core.CORE_TESTS:
        assert name in globals() and hasattr(on_3_9, name), name
    tests = {name: f for name, f in vars(core).items() if name.startswith("test_")}
    uses_core_stack = {name for name, f in tests.items() if "any_stack" in f.__code__.co_varnames}
    assert uses_core_stack == set(core.CORE_TESTS)
