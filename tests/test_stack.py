"""The embedded stack as a child process (emostream.stack): stopping it, and a start that fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from emostream.stack import stop, wait_for_stack


def test_stop_interrupts_the_child_as_ctrl_c_does() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"up\n"
    started = time.monotonic()
    stop(child)
    assert child.returncode is not None and time.monotonic() - started < 30  # SIGINT, not the timeout
    stop(child)  # gone already: nothing to do


def test_stop_kills_a_child_that_ignores_the_interrupt() -> None:
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"up\n"
    stop(child, timeout=0.5)
    assert child.returncode == -9


def test_waiting_for_a_stack_that_exits_names_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    log.write_text("starting\nerror: the broker would not start\n")
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    child.wait()
    with pytest.raises(RuntimeError, match=r"exited with 3:\nstarting\nerror: the broker would not start"):
        wait_for_stack(child, tmp_path / "clickhouse", tmp_path / "broker.json", log, timeout=10)
