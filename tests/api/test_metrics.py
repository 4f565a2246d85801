"""GET /metrics: Prometheus text, parsed with prometheus_client's own parser; no ids as labels."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.main import create_app
from api.members.models import Member
from api.metrics import count_deliveries
from api.settings import Settings
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, auth

Caller = tuple[Member, str]
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def scrape(client: TestClient, **headers: str) -> dict[str, Any]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def samples(families: dict[str, Any], name: str) -> list[Any]:
    return list(families[name].samples) if name in families else []


class TestMetrics:
    def test_routes_are_templates_and_no_label_holds_an_id(
        self, client: TestClient, coordinator: Caller, responder: Caller
    ) -> None:
        member, _ = responder
        _, coord = coordinator
        assert client.get(f"/v1/members/{member.id}", headers=auth(coord)).status_code == 200
        assert client.get(f"/v1/members/{uuid.uuid4()}", headers=auth(coord)).status_code == 404
        assert client.get(f"/no/such/{member.id}").status_code == 404
        alert = {
            "location": {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]},
            "kind": "mass",
            "needed": 1,
            "exercise": True,
        }
        headers = {**auth(coord), "Idempotency-Key": str(uuid.uuid4())}
        assert client.post("/v1/alerts", json=alert, headers=headers).status_code == 201
        count_deliveries([("webhook", "sent"), ("sms", "pending")])

        families = scrape(client)
        requests = samples(families, "ern_http_requests")
        routes = {(s.labels["method"], s.labels["route"], s.labels["status"]) for s in requests}
        assert ("GET", "/v1/members/{member_id}", "200") in routes
        assert ("GET", "/v1/members/{member_id}", "404") in routes
        assert ("POST", "/v1/alerts", "201") in routes
        assert ("OTHER", "<unmatched>", "404") in routes
        latency = samples(families, "ern_http_request_duration_seconds")
        assert any(s.name.endswith("_bucket") for s in latency)
        alerts = samples(families, "ern_alerts_raised")
        assert any(
            s.labels == {"kind": "mass", "ranking": "street_network"} and s.value >= 1
            for s in alerts
        )
        results = {
            (s.labels["channel"], s.labels["result"]) for s in samples(families, "ern_deliveries")
        }
        assert {("webhook", "sent"), ("sms", "retry")} <= results
        modes = {s.labels["mode"] for s in samples(families, "ern_graph_nodes")}
        assert "walk" in modes
        for name in ("ern_db_pool_size", "ern_db_pool_checked_out", "ern_outbox_lag_seconds"):
            assert samples(families, name), name
        for family in families.values():
            for sample in family.samples:
                for value in sample.labels.values():
                    assert not UUID_RE.search(value), (sample.name, value)

    def test_metrics_token_is_required_when_set(
        self, settings: Settings, graphs: Any, engine: Any, session_factory: Any
    ) -> None:
        guarded = settings.model_copy(update={"metrics_token": SecretStr("m" * 40)})
        app = create_app(guarded, engine=engine, session_factory=session_factory, graphs=graphs)
        client = TestClient(app, raise_server_exceptions=False)
        r = client.get("/metrics")
        assert r.status_code == 401
        assert r.json()["error"] == "Unauthorized"
        assert client.get("/metrics", headers=auth("m" * 39 + "x")).status_code == 401
        assert "ern_http_requests" in scrape(client, **auth("m" * 40))

    def test_metrics_is_not_in_the_api_document(self, client: TestClient) -> None:
        # An operator's route, like /docs: the API's clients never see it.
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


MULTIPROCESS = """
import multiprocessing, os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from api import metrics
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

def child():
    metrics.count_deliveries([("webhook", "sent")])
    metrics.POOL_CHECKED_OUT.set(2)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    for _ in range(2):
        p = ctx.Process(target=child)
        p.start()
        p.join()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    sys.stdout.write(generate_latest(registry).decode())
"""


class TestMultiprocess:
    @pytest.mark.slow
    def test_processes_sharing_a_directory_are_summed(self, tmp_path: Any) -> None:
        # What `ern serve` sets up for its uvicorn processes and the worker child.
        import subprocess
        import sys

        script = tmp_path / "mp.py"
        script.write_text(MULTIPROCESS)
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        families = {f.name: f for f in text_string_to_metric_families(out)}
        sent = [s for s in families["ern_deliveries"].samples if s.name.endswith("_total")]
        assert [(s.labels, s.value) for s in sent] == [
            ({"channel": "webhook", "result": "sent"}, 2.0)
        ]
