"""The streaming core of ``tests/test_streaming.py`` on Apache Kafka 3.9 (a KRaft node from the Maven Central jars).

The tests are imported, not copied: the same code runs here with ``core_broker`` set to Apache Kafka 3.9. A file
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
def core_broker(kafka_3_9: str) -> str:
    """Apache Kafka 3.9 instead of tansu."""
    return kafka_3_9
