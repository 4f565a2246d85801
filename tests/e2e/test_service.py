"""The service as an operator runs it: `ern db upgrade`, `ern admin`, `ern serve` in real processes.

A fresh database, the CLI commands from the README, a uvicorn process with its in-process
workers, and a real local webhook receiver: a member raises an alert and the nearest
responder's app receives one signed message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.notify.channels import verify_signature
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, member_body
from tests.e2e.support import Receiver, Server, ern, server_env

pytestmark = pytest.mark.slow


ALERT = {
    "location": {"type": "Point", "coordinates": [HELSINKI_LON + 0.001, HELSINKI_LAT]},
    "kind": "personal",
    "needed": 1,
    "note": "followed near the station",
}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sample of ``name`` with exactly ``labels`` (counters: their _total)."""
    found = [
        s.value
        for s in families[name].samples
        if s.labels == labels and s.name in (name, f"{name}_total")
    ]
    assert len(found) == 1, (name, labels, families[name].samples)
    return float(found[0])


def sent(families: dict[str, Any]) -> float:
    if "ern_deliveries" not in families:
        return 0.0
    return value(families, "ern_deliveries", channel="webhook", result="sent")


def scrape_until(
    base: str, ready: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> dict[str, Any]:
    """GET /metrics, parsed by prometheus_client, until ``ready`` (a delivery is counted
    just after the receiver answered)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = httpx.get(f"{base}/metrics")
        assert answer.status_code == 200, answer.text
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        if ready(families) or time.monotonic() > deadline:
            return families
        time.sleep(0.2)


def test_alert_reaches_the_nearest_responders_webhook_through_a_running_service(
    fresh_database: str, graphs: Any, graph_dir: Path, tmp_path: Path
) -> None:
    env = server_env(fresh_database, graph_dir, tmp_path / "var")
    ern(env, "db", "upgrade")
    token = (
        ern(env, "admin", "create-coordinator", "--handle", "e2e-coord").strip().splitlines()[-1]
    )

    receiver = Receiver()
    server = Server(env, tmp_path / "serve.log")
    base = server.base
    try:
        health = server.wait_healthy()
        assert health["database"] == "ok" and health["schema_up_to_date"] is True
        assert set(health["graphs"]) == {"walk", "bike", "drive"}
        assert httpx.get(f"{base}/docs").status_code == 200

        coord = {"Authorization": f"Bearer {token}"}
        responder = member_body(
            "e2e-rosa", roles=["responder"], mode="walk", contact={"webhook_url": receiver.url}
        )
        created = httpx.post(f"{base}/v1/members", json=responder, headers=coord)
        assert created.status_code == 201, created.text
        responder_auth = {"Authorization": f"Bearer {created.json()['token']}"}
        requester = member_body("e2e-ana", roles=[], lon=HELSINKI_LON + 0.004, lat=HELSINKI_LAT)
        made = httpx.post(f"{base}/v1/members", json=requester, headers=coord)
        assert made.status_code == 201, made.text
        asker = {"Authorization": f"Bearer {made.json()['token']}", "Idempotency-Key": "e2e-1"}

        raised = httpx.post(f"{base}/v1/alerts", json=ALERT, headers=asker)
        assert raised.status_code == 201, raised.text
        body = raised.json()
        assert body["ranking"] == "street_network" and body["notified_count"] == 1
        again = httpx.post(f"{base}/v1/alerts", json=ALERT, headers=asker)
        assert again.status_code == 200 and again.json()["id"] == body["id"]

        receiver.wait_for(1)
        assert len(receiver.requests) == 1, receiver.requests
        headers, raw = receiver.requests[0]
        # The responder's own key, as their receiver would fetch it.
        own = httpx.get(f"{base}/v1/members/me/webhook-key", headers=responder_auth)
        assert own.status_code == 200, own.text
        assert verify_signature(bytes.fromhex(own.json()["key"]), raw, headers["x-ern-signature"])
        theirs = httpx.get(f"{base}/v1/members/me/webhook-key", headers=asker).json()["key"]
        assert not verify_signature(bytes.fromhex(theirs), raw, headers["x-ern-signature"])
        message = json.loads(raw)
        assert message["alert_id"] == body["id"] and message["kind"] == "alert"
        # /metrics of the running service: the worker child's delivery is counted there too.
        families = scrape_until(base, lambda f: sent(f) >= 1)
        assert sent(families) == 1
        assert value(families, "ern_alerts_raised", kind="personal", ranking="street_network") == 1
        assert value(families, "ern_graph_load_seconds") > 0
        for mode, loaded in graphs.by_mode.items():
            assert value(families, "ern_graph_nodes", mode=mode) == loaded.graph.n_nodes
            assert value(families, "ern_graph_edges", mode=mode) == loaded.graph.n_edges
    finally:
        code = server.stop()
        receiver.close()
    assert code == 0, server.output()[-4000:]
    assert "Traceback" not in server.output()
