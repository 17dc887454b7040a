"""Bounded shutdown: a stop signal is honoured within a deadline, whatever the worker is waiting on.

The first SIGINT/SIGTERM asks for a clean stop: the agent gives up the batch in hand (its offsets are
withheld, never committed, so the next worker scores it again), Faust commits what was written and
leaves the group. If that has not finished within ``shutdown_timeout`` (a blocking call that hangs, a
broker that does not answer), or a second signal arrives, the process exits at once, after running
its abort hooks (``up`` stops the broker it started). Nothing uncommitted is lost either way: an
exit without a commit is the same as a crash, which at-least-once delivery and idempotent writes absorb.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("emostream.worker")
EXIT_ABORTED = 130  # what a shell reports for a process ended by Ctrl-C


class StopRequested(Exception):
    """The worker is stopping: whatever it was waiting for is abandoned and its batch is not committed."""


class Shutdown:
    """Asked once: a clean stop with a deadline. Asked twice, or past the deadline: exit now."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.requested = threading.Event()
        self._abort_hooks: list[Callable[[], object]] = []
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_abort(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` before a forced exit (stop child processes, remove state files)."""
        self._abort_hooks.append(hook)

    def request(self, reason: str) -> None:
        """Ask for a stop (a signal's name as ``reason``): the first starts the deadline, a second one aborts."""
        with self._lock:
            again = self.requested.is_set()
            self.requested.set()
        if again:
            self.abort(f"{reason} again")
            return
        log.warning(
            "%s: stopping; a batch not yet written is left uncommitted for the next worker "
            "(at most %.0f s; %s again stops at once)",
            reason,
            self.timeout,
            reason,
        )
        self._timer = threading.Timer(self.timeout, self.abort, (f"not stopped within {self.timeout:.0f} s",))
        self._timer.daemon = True
        self._timer.start()

    def raise_if_requested(self) -> None:
        """Raise ``StopRequested`` once a stop was asked for: called between the steps of a batch."""
        if self.requested.is_set():
            raise StopRequested

    def done(self) -> None:
        """The clean stop finished in time: no forced exit."""
        if self._timer is not None:
            self._timer.cancel()

    def abort(self, why: str) -> None:
        """Exit now with status 130, after the abort hooks (last added first); never returns."""
        log.error("%s: exiting now; uncommitted batches will be scored again by the next worker", why)
        for hook in reversed(self._abort_hooks):
            try:
                hook()
            except Exception:  # an abort must exit whatever a hook does
                log.exception("abort hook %r failed", hook)
        logging.shutdown()
        os._exit(EXIT_ABORTED)
