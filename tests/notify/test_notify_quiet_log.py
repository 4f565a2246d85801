"""A channel that cannot work is logged once per cause and interval with a count, not per try."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from api.clock import ManualClock
from api.logs import TEXT_FORMAT
from api.notify.quiet import FailureLog
from api.settings import Settings
from tests.notify.conftest import deliveries, free_port


@pytest.fixture
def ern_log() -> Iterator[io.StringIO]:
    """What `ern serve` / `ern worker` print: the ern loggers through a handler in their format."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logger = logging.getLogger("ern")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


def _lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if " WARNING ern.notify: " in line]


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestQuietLog:
    def test_an_smtp_server_that_does_not_answer_is_one_line_per_interval_with_a_count(
        self,
        notify_settings: Settings,
        make_member: Any,
        enqueue_committed: Any,
        make_worker: Any,
        committed: Any,
        clock: ManualClock,
        ern_log: io.StringIO,
    ) -> None:
        # Nothing listens on this port: every e-mail attempt is refused.
        settings = notify_settings.model_copy(
            update={"smtp_port": free_port(), "delivery_max_attempts": 10}
        )
        alert_id = enqueue_committed(*(make_member(email=f"m{n}@ern.test") for n in range(30)))
        worker = make_worker(settings)
        ticks = Monotonic()
        worker.failure_log = FailureLog(logging.getLogger("ern.notify"), clock=ticks)
        assert worker.run_once() == 30
        [first] = _lines(ern_log)
        assert "email delivery" in first and "will be retried" in first
        assert "SMTP server unreachable (ConnectionRefusedError)" in first
        assert "logged once per 60 s" in first
        # Their retries fail too, within the interval: counted, not logged.
        clock.advance(settings.backoff_cap_s)
        ticks.now += 30
        assert worker.run_once() == 30
        assert len(_lines(ern_log)) == 1
        rows = deliveries(committed, alert_id)
        assert {(d.state, d.attempts) for d in rows} == {("pending", 2)}
        # The interval ends: one line with the count of the failures it held.
        ticks.now += 31
        assert worker.run_once() == 0
        lines = _lines(ern_log)
        assert len(lines) == 2
        assert "email: 59 more deliveries failed (to be retried) in the last 61 s" in lines[1]
        assert lines[1].endswith("SMTP server unreachable (ConnectionRefusedError)")
        # A quiet interval later the cause is forgotten: its next failure is logged at once.
        ticks.now += 61
        worker.failure_log.flush()
        ticks.now += 61
        worker.failure_log.flush()
        clock.advance(settings.backoff_cap_s)
        assert worker.run_once() == 30
        assert len(_lines(ern_log)) == 3

    def test_an_unconfigured_sms_gateway_fails_every_sms_at_once_with_one_line(
        self,
        notify_settings: Settings,
        make_member: Any,
        enqueue_committed: Any,
        make_worker: Any,
        committed: Any,
        ern_log: io.StringIO,
    ) -> None:
        settings = notify_settings.model_copy(update={"sms_base_url": None})
        alert_id = enqueue_committed(*(make_member(phone=f"+35840000{n:04d}") for n in range(12)))
        assert make_worker(settings).run_once() == 12
        rows = deliveries(committed, alert_id)
        reason = "no SMS gateway is configured (ERN_SMS_BASE_URL is unset)"
        # Failed on the first attempt with the reason: never retried.
        assert {(d.state, d.attempts, d.last_error) for d in rows} == {("failed", 1, reason)}
        [line] = _lines(ern_log)
        assert "sms delivery" in line and "marked failed" in line and reason in line
