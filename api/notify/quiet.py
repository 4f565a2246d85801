"""Delivery failures logged once per (channel, cause) and interval with a count, not per try."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# A channel that cannot work (no SMTP server answering, an unconfigured SMS gateway) fails
# every attempt: 30 alerts made ~2,000 warnings in 2.5 minutes, one per attempt.
QUIET_INTERVAL_S = 60.0


@dataclass
class _Window:
    started: float
    count: int = 0


class FailureLog:
    """The first failure of a cause is logged at once; repeats within the interval are counted.

    When the interval has passed, one line says how many more failed with that cause; a cause
    that stopped recurring is forgotten, so its next failure is logged at once again.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = QUIET_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, str, bool], _Window] = {}
        self._lock = threading.Lock()

    def failed(self, channel: str, delivery_id: str, cause: str, *, final: bool) -> None:
        """A delivery's attempt failed with ``cause``; ``final``: marked failed, no retry."""
        key = (channel, cause, final)
        now = self._clock()
        with self._lock:
            self._flush(now)
            window = self._windows.get(key)
            if window is not None:
                window.count += 1
                return
            self._windows[key] = _Window(now)
        outcome = "marked failed" if final else "will be retried"
        self._log.warning(
            "%s delivery %s failed (%s): %s; more failures like it are counted and logged "
            "once per %d s",
            channel,
            delivery_id,
            outcome,
            cause,
            round(self.interval_s),
        )

    def flush(self) -> None:
        """Log the counts of intervals that have ended (the worker calls it every round)."""
        now = self._clock()
        with self._lock:
            self._flush(now)

    def _flush(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.started < self.interval_s:
                continue
            if window.count == 0:
                del self._windows[key]
                continue
            channel, cause, final = key
            outcome = "marked failed" if final else "to be retried"
            self._log.warning(
                "%s: %d more deliveries failed (%s) in the last %d s: %s",
                channel,
                window.count,
                outcome,
                round(now - window.started),
                cause,
            )
            self._windows[key] = _Window(now)
