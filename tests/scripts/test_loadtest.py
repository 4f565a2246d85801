"""scripts/loadtest.py runs end to end (--quick) against PostGIS and keeps its JSON contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.paths import REPO

LOADTEST = REPO / "scripts" / "loadtest.py"


@pytest.mark.slow
def test_quick_load_test_sends_every_alert_and_reports_latency(database_url: str) -> None:
    env = {**os.environ, "ERN_TEST_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, str(LOADTEST), "--quick", "--json", "--quiet", "--drain-s", "30"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert result["requests"] == result["alerts"] == 200
    assert result["errors"] == 0, result["status"]
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["setup"]["requesters"] >= 250
    assert result["notified_count"]["total"] > 0
    # notifications went through the outbox workers to the local sink
    assert result["deliveries"]["sink_received"] > 0
    assert result["deliveries"]["outbox_states"].get("failed", 0) == 0
    assert result["server_log_tracebacks"] == 0
    assert result["setup"]["graph"] == "monaco_2016"
    # the throwaway database is gone
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (result["setup"]["database"],)
        ).fetchone()
    assert left == (0,)
