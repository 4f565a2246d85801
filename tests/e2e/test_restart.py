"""Fault test: the embedded database restarts right after a 201; nothing is lost or doubled."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.embedded import EmbeddedCluster
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, member_body
from tests.e2e.support import Receiver, Server, ern, server_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def var_dir() -> Iterator[Path]:
    # Under the checkout: the cluster runs as the postgres user, who must reach it.
    path = REPO / "var" / f"test-restart-{uuid.uuid4().hex[:8]}"
    yield path
    EmbeddedCluster(path).stop()
    shutil.rmtree(path, ignore_errors=True)


def test_alert_and_its_message_survive_a_database_restart_after_the_201(
    var_dir: Path, graphs: Any, graph_dir: Path, tmp_path: Path
) -> None:
    # The embedded default (no ERN_DATABASE_URL); the receiver fails the first attempt so
    # that the retry has to cross the restart.
    env = server_env(None, graph_dir, var_dir, ERN_BACKOFF_BASE_S="0.5", ERN_BACKOFF_CAP_S="2")
    ern(env, "db", "upgrade")
    token = ern(env, "admin", "create-coordinator", "--handle", "restart-coord").split()[-1]
    receiver = Receiver(fail_first=1)
    server = Server(env, tmp_path / "serve.log")
    try:
        server.wait_healthy()
        coord = {"Authorization": f"Bearer {token}"}
        for handle in ("restart-a", "restart-b"):
            body = member_body(handle, roles=["responder"], contact={"webhook_url": receiver.url})
            created = httpx.post(f"{server.base}/v1/members", json=body, headers=coord)
            assert created.status_code == 201, created.text
        asker = member_body("restart-ask", roles=[], lon=HELSINKI_LON + 0.004, lat=HELSINKI_LAT)
        made = httpx.post(f"{server.base}/v1/members", json=asker, headers=coord)
        headers = {"Authorization": f"Bearer {made.json()['token']}", "Idempotency-Key": "r-1"}
        alert = {
            "location": {"type": "Point", "coordinates": [HELSINKI_LON + 0.001, HELSINKI_LAT]},
            "kind": "personal",
            "needed": 2,
        }
        raised = httpx.post(f"{server.base}/v1/alerts", json=alert, headers=headers, timeout=10)
        assert raised.status_code == 201, raised.text
        alert_id = raised.json()["id"]
        assert raised.json()["notified_count"] == 2

        # Restart the database underneath the running service.
        ern(env, "db", "stop")
        ern(env, "db", "start")

        receiver.wait_for(2, timeout_s=60)
        delivered = [json.loads(b) for b in receiver.accepted()]
        assert sorted(d["alert_id"] for d in delivered) == [alert_id, alert_id]
        assert len({d["delivery_id"] for d in delivered}) == 2  # one each, none doubled
        assert len(receiver.requests) == 3  # the failed first attempt was retried once

        # The service reconnects: the committed alert is still there.
        seen = httpx.get(f"{server.base}/v1/alerts/{alert_id}", headers=coord, timeout=10)
        assert seen.status_code == 200 and seen.json()["notified_count"] == 2
    finally:
        code = server.stop()
        receiver.close()
    assert code == 0, server.output()[-4000:]
