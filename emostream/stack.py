"""The embedded stack as a child process: wait until a started `emostream up` serves, and stop it.

`emostream demo` and ``benchmarks/review_loop.py`` start ``python -m emostream up`` with
:class:`subprocess.Popen` (its output to a log file), then drive it from outside: :func:`wait_for_stack`
returns once its broker and web endpoint have announced themselves (the discovery files of
``emostream.stream.discovery``), :func:`stop` ends it the way Ctrl-C would.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from emostream.stream.kafka.broker import terminate
from emostream.stream.web.endpoint import Endpoint


def wait_for_stack(
    stack: subprocess.Popen, data_dir: Path, broker: Path, log_path: Path, timeout: float = 180.0
) -> tuple[Endpoint, str]:
    """The running `up`'s web endpoint and its broker's bootstrap address, once both are up.

    ``data_dir`` is its chDB directory (where the endpoint announces itself), ``broker`` its broker's
    discovery file; the endpoint counts only if it is this child's (its pid). Raises RuntimeError, with
    the end of ``log_path``, if the child exits first, or after ``timeout`` seconds.
    """
    from emostream.stream.discovery import endpoint_file, read_state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"`emostream up` exited with {stack.returncode}:\n" + "\n".join(tail))
        web, kafka = read_state(endpoint_file(data_dir)), read_state(broker)
        if web and kafka and web["pid"] == stack.pid:
            endpoint = Endpoint.find(data_dir)
            if endpoint is not None:
                return endpoint, str(kafka["bootstrap"])
        time.sleep(0.2)
    raise RuntimeError(f"`emostream up` did not come up within {timeout:.0f} s; see {log_path}")


def stop(stack: subprocess.Popen, timeout: float = 60.0) -> None:
    """Stop the child as Ctrl-C does (SIGINT: `up`'s clean stop); killed if not gone after ``timeout`` seconds.

    Returns once it has exited; nothing to do if it has already.
    """
    terminate(stack, timeout, signal.SIGINT)
