"""scripts/bench_outbox.py drains every enqueued delivery to its sink and reports each round."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO

BENCH_OUTBOX = REPO / "scripts" / "bench_outbox.py"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--http10", "--workers", "2")])
def test_small_run_delivers_everything(database_url: str, extra: tuple[str, ...]) -> None:
    env = {**os.environ, "ERN_TEST_DATABASE_URL": database_url}
    done = subprocess.run(
        [
            sys.executable, str(BENCH_OUTBOX), "--members", "40", "--alerts", "30",
            "--per-alert", "3", "--rounds", "2", "--concurrency", "8", "--json", *extra,
        ],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    # The script itself fails when the sink did not get exactly the rows enqueued, all 'sent'.
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert len(result["rounds"]) == 2
    assert all(r["deliveries"] == 90 for r in result["rounds"])
    assert result["median_deliveries_per_s"] > 0
    assert result["median_cpu_us_per_delivery"] > 0
    assert result["workers"] == (2 if extra else 1)
    assert result["concurrency"] == 8
    assert result["sink"] == ("HTTP/1.0" if extra else "HTTP/1.1 keep-alive")
