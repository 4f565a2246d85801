"""`ern serve`'s outbox and escalation workers as one child process, restarted if it dies."""

# In the server's own interpreter the workers compete with the requests for the GIL: in the
# load test (2,000 alerts from 32 clients, 2 cores) `ern serve` with in-process workers took
# 240 alerts/s at a p99 of 269 ms; with the workers in a child process, 333 alerts/s at
# 124 ms, and messages reached receivers sooner (docs/benchmarks.md). The child is `ern
# worker`, the same code an operator runs by hand: one outbox worker whatever the deployment.

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("ern.worker_process")

RESTART_DELAYS_S = (1.0, 2.0, 5.0, 15.0, 30.0)
HEALTHY_RUN_S = 60.0  # a child that ran this long starts the restart delays over
STOP_TIMEOUT_S = 30.0


def worker_command(parent_pid: int) -> list[str]:
    """`ern worker` on this interpreter, told to stop when ``parent_pid`` is gone."""
    return [sys.executable, "-m", "api", "worker", "--parent-pid", str(parent_pid)]


# The child also watches its parent (--parent-pid): a server killed with SIGKILL leaves no
# worker behind.
class WorkerProcess:
    """One `ern worker` child: start(), restarted after an unexpected exit, stop()."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        """Start the child and the thread that restarts it."""
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="ern-worker-watch", daemon=True)
        self._monitor.start()

    def _spawn(self) -> None:
        # Inherits stdout/stderr: the worker's log lines join the server's. Its own session:
        # a terminal's Ctrl-C reaches the server only, which then stops the worker in order
        # (otherwise the worker would stop first and be restarted during the shutdown).
        with self._lock:  # not after stop(): that child would outlive the server's wait
            if self._stopping.is_set():
                return
            proc = subprocess.Popen(worker_command(os.getpid()), start_new_session=True)
            self._proc = proc
        log.info("outbox and escalation worker process started (pid %d)", proc.pid)

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= HEALTHY_RUN_S:
                failures = 0
            delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
            failures += 1
            log.error(
                "worker process %d exited with %s; restarting in %.0f s (queued messages wait, "
                "none are lost)",
                proc.pid,
                code,
                delay,
            )
            if self._stopping.wait(delay):
                return
            self._spawn()

    def stop(self) -> int | None:
        """Stop the child (it finishes its current batch); its exit code."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("worker process %d did not stop in %.0f s: killed", proc.pid, STOP_TIMEOUT_S)
            proc.kill()
            code = proc.wait()
        if self._monitor is not None:
            self._monitor.join(timeout=5.0)
        return code


def watch_parent(parent_pid: int, on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` once ``parent_pid`` is no longer this process's parent (checked each s)."""
    # An orphan is re-parented (to init or a subreaper), so its parent pid changes: no
    # platform-specific death signal needed.

    def poll() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        on_gone()

    threading.Thread(target=poll, name="ern-parent-watch", daemon=True).start()
