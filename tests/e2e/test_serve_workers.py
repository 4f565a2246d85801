"""`ern serve --workers 2`: two uvicorn processes on one port answer health checks and alerts.

Each process runs its own outbox worker; the one alert still reaches the responder's webhook
exactly once (deliveries are leased in the database, not per process).
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, member_body
from tests.e2e.support import ERN, Receiver, ern, free_port, server_env, wait_healthy

pytestmark = pytest.mark.slow

ALERT = {
    "location": {"type": "Point", "coordinates": [HELSINKI_LON + 0.001, HELSINKI_LAT]},
    "kind": "personal",
    "needed": 1,
}


def test_two_worker_processes_serve_health_and_alerts(
    fresh_database: str, graphs: Any, graph_dir: Path, tmp_path: Path
) -> None:
    env = server_env(fresh_database, graph_dir, tmp_path / "var")
    ern(env, "db", "upgrade")
    token = ern(env, "admin", "create-coordinator", "--handle", "w-coord").strip().splitlines()[-1]

    receiver = Receiver()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*ERN, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
             "--no-access-log"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        health = wait_healthy(base, proc, log)
        assert health["database"] == "ok" and set(health["graphs"]) == {"walk", "bike", "drive"}

        coord = {"Authorization": f"Bearer {token}"}
        responder = member_body(
            "w-rosa", roles=["responder"], mode="walk", contact={"webhook_url": receiver.url}
        )
        created = httpx.post(f"{base}/v1/members", json=responder, headers=coord)
        assert created.status_code == 201, created.text
        requester = member_body("w-ana", roles=[], lon=HELSINKI_LON + 0.004, lat=HELSINKI_LAT)
        made = httpx.post(f"{base}/v1/members", json=requester, headers=coord)
        assert made.status_code == 201, made.text
        asker = {"Authorization": f"Bearer {made.json()['token']}", "Idempotency-Key": "w-1"}

        raised = httpx.post(f"{base}/v1/alerts", json=ALERT, headers=asker)
        assert raised.status_code == 201, raised.text
        assert raised.json()["notified_count"] == 1
        # fresh connections, so either process may answer: all see the same database
        for _ in range(6):
            assert httpx.get(f"{base}/healthz").status_code == 200

        receiver.wait_for(1)
        assert len(receiver.accepted()) == 1, receiver.requests
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        receiver.close()
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "Traceback" not in output
    # two worker processes started, each with its own pid
    assert len(set(re.findall(r"Started server process \[(\d+)\]", output))) == 2, output[-4000:]
    assert "POST /v1/alerts" not in output  # --no-access-log
