"""PostgreSQL restarted (immediate shutdown, then start) under open-loop load: the short CI form
of `scripts/loadtest.py --restart-db-at S`.

A real `ern serve` and a real `ern worker` (subprocesses) on a private embedded cluster in a
temporary directory (never the shared test server), alerts and member updates at a steady
rate, a local webhook receiver. What a client saw is checked against the database and the
receiver afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.slow

LOADTEST = REPO / "scripts" / "loadtest.py"


@pytest.fixture(scope="module")
def restart_run() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(LOADTEST), "--quick", "--members", "400", "--rate", "12",
         "--restart-db-at", "4", "--down-s", "1.5", "--duration-s", "14", "--clients", "16",
         "--drain-s", "60", "--json", "--quiet"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_while_the_database_is_away_clients_get_503_with_retry_after_never_a_500(
    restart_run: dict[str, Any],
) -> None:
    r = restart_run
    assert set(r["status"]) <= {"200", "201", "503"}, r["status"]
    assert r["server_errors_5xx_not_503"] == 0 and r["no_answer"] == 0
    assert r["unavailable_503"] > 0, "the restart was not seen: nothing was tested"
    assert r["unavailable_503_with_retry_after"] == r["unavailable_503"]
    assert set(r["unavailable_503_errors"]) == {"DatabaseUnavailable"}
    # the answers were ours, not a stack trace: nothing was logged as unexpected
    assert r["server_log_tracebacks"] == 0, r.get("server_log_first_traceback")


def test_healthz_says_why_and_the_service_recovers_by_itself(restart_run: dict[str, Any]) -> None:
    r = restart_run
    assert r["healthz_not_ok"] > 0
    assert all(reason.startswith("unreachable: ") for reason in r["healthz_reasons"])
    # seconds, not minutes: no error answered later than 5 s after the database was back
    assert r["last_error_after_db_up_s"] < 5.0, r["restart"]
    after = r["windows"]["after"]
    assert after["requests"] > 0 and set(after["status"]) <= {"200", "201"}, after
    # open loop: the requests went out at the rate asked for, the restart did not stall them
    assert r["requests_per_s_held"] > 0.8 * 2 * r["rate_per_s"]


def test_every_201_is_stored_and_delivered_once_and_no_error_is_half_written(
    restart_run: dict[str, Any],
) -> None:
    r = restart_run
    assert r["alerts_created"] > 0 and r["alerts_errored"] > 0
    assert r["alerts_created_missing_in_db"] == 0
    assert r["alerts_half_written"] == 0
    assert r["notifications_expected"] > 0
    assert r["notifications_received"] == r["notifications_expected"]
    assert r["alerts_short_of_notifications"] == r["alerts_over_notifications"] == 0
    assert r["duplicate_deliveries"] == 0
    assert r["outbox_unsent"] == 0, r["outbox_states"]
    assert r["updates_ok"] > 0
