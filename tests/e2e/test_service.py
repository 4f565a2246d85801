"""The service as an operator runs it: `ern db upgrade`, `ern admin`, `ern serve` in real processes.

A fresh database, the CLI commands from the README, a uvicorn process with its in-process
workers, and a real local webhook receiver: a member raises an alert and the nearest
responder's app receives one signed message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from api.notify.channels import verify_signature, webhook_signing_key
from api.settings import Settings
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, member_body

pytestmark = pytest.mark.slow

SECRET = "e2e-secret-key-abcdefghijklmnopqrstuvwxyz0123456789"
ERN = [str(Path(sys.executable).parent / "ern")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """An empty database with PostGIS but no schema: `ern db upgrade` must make it."""
    name = f"ern_e2e_{uuid.uuid4().hex[:8]}"
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(database_url).set(database=name)
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(database_url: str, graph_dir: Path, var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERN_")}
    env.update(
        ERN_DATABASE_URL=database_url,
        ERN_SECRET_KEY=SECRET,
        ERN_GRAPH_DIR=str(graph_dir),
        ERN_VAR_DIR=str(var_dir),
        ERN_TIMEZONE="Europe/Helsinki",
        ERN_WAVE_TIMEOUT_S="600",
    )
    return env


def _ern(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*ERN, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ern {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _wait_healthy(
    base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ern serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            answer = httpx.get(f"{base}/healthz", timeout=2.0)
            if answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail("ern serve did not become healthy")


def test_alert_reaches_the_nearest_responders_webhook_through_a_running_service(
    fresh_database: str, graphs: Any, graph_dir: Path, tmp_path: Path
) -> None:
    env = _env(fresh_database, graph_dir, tmp_path / "var")
    _ern(env, "db", "upgrade")
    token = _ern(env, "admin", "create-coordinator", "--handle", "e2e-coord").strip().splitlines()[-1]

    receiver = Receiver()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*ERN, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        health = _wait_healthy(base, proc, log)
        assert health["database"] == "ok" and health["schema_up_to_date"] is True
        assert set(health["graphs"]) == {"walk", "bike", "drive"}
        assert httpx.get(f"{base}/docs").status_code == 200

        coord = {"Authorization": f"Bearer {token}"}
        responder = member_body(
            "e2e-rosa", roles=["responder"], mode="walk",
            contact={"webhook_url": receiver.url},
        )
        created = httpx.post(f"{base}/v1/members", json=responder, headers=coord)
        assert created.status_code == 201, created.text
        requester = member_body("e2e-ana", roles=[], lon=HELSINKI_LON + 0.004, lat=HELSINKI_LAT)
        made = httpx.post(f"{base}/v1/members", json=requester, headers=coord)
        assert made.status_code == 201, made.text
        asker = {"Authorization": f"Bearer {made.json()['token']}", "Idempotency-Key": "e2e-1"}

        alert = {
            "location": {"type": "Point", "coordinates": [HELSINKI_LON + 0.001, HELSINKI_LAT]},
            "kind": "personal", "needed": 1, "note": "followed near the station",
        }
        raised = httpx.post(f"{base}/v1/alerts", json=alert, headers=asker)
        assert raised.status_code == 201, raised.text
        body = raised.json()
        assert body["ranking"] == "street_network" and body["notified_count"] == 1
        again = httpx.post(f"{base}/v1/alerts", json=alert, headers=asker)
        assert again.status_code == 200 and again.json()["id"] == body["id"]

        deadline = time.monotonic() + 30
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a duplicate, if any, would arrive now
        assert len(receiver.requests) == 1, receiver.requests
        headers, raw = receiver.requests[0]
        key = webhook_signing_key(Settings(secret_key=SECRET, database_url=fresh_database))
        assert verify_signature(key, raw, headers.get("x-ern-signature"))
        message = json.loads(raw)
        assert message["alert_id"] == body["id"] and message["kind"] == "alert"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        receiver.close()
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert "Traceback" not in log.read_text()
