"""Fault test: `ern worker` killed (SIGKILL) in the middle of a batch, then started again.

Nothing is lost, and the only repeats are messages that were in flight at the kill, under the
same delivery id (the documented at-least-once contract: the lease of a dead worker runs
out and the row is sent again under its id). A real worker process, a real `ern serve`
(without workers) and a slow local webhook receiver, so that the kill lands mid-batch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, member_body
from tests.e2e.support import ERN, Server, ern, server_env

pytestmark = pytest.mark.slow

RESPONDERS = 6
ALERTS = 8
HOLD_S = 1.5  # the receiver answers this late: the kill comes while sends are in flight
BATCH = 8  # --batch-size = --concurrency: one wave per batch, so the lease is 30 s


class SlowReceiver:
    """Records each request's delivery id when it arrives, answers 200 after HOLD_S."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        ids = self.ids

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ids.append(json.loads(body)["delivery_id"])
                time.sleep(HOLD_S)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    pass  # the worker is gone

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _outbox(database_url: str) -> dict[str, str]:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT delivery_id, state FROM outbox").fetchall()
    return {str(d): str(s) for d, s in rows}


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*ERN, "worker", "--batch-size", str(BATCH), "--concurrency", str(BATCH)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_only_what_was_in_flight(
    fresh_database: str, graphs: Any, graph_dir: Path, tmp_path: Path
) -> None:
    env = server_env(
        fresh_database, graph_dir, tmp_path / "var", ERN_RUN_WORKERS="false",
        ERN_DELIVERY_TIMEOUT_S="5",
    )  # fmt: skip
    ern(env, "db", "upgrade")
    token = ern(env, "admin", "create-coordinator", "--handle", "kill-coord").split()[-1]
    coord = {"Authorization": f"Bearer {token}"}
    receiver = SlowReceiver()
    server = Server(env, tmp_path / "serve.log")
    worker: subprocess.Popen[bytes] | None = None
    try:
        server.wait_healthy()
        for n in range(RESPONDERS):
            body = member_body(f"kill-r{n}", contact={"webhook_url": receiver.url})
            made = httpx.post(f"{server.base}/v1/members", json=body, headers=coord, timeout=10)
            assert made.status_code == 201, made.text
        notified = 0
        for n in range(ALERTS):
            asker = member_body(f"kill-ask{n}", roles=[], lon=HELSINKI_LON + 0.004)
            made = httpx.post(f"{server.base}/v1/members", json=asker, headers=coord, timeout=10)
            headers = {"Authorization": f"Bearer {made.json()['token']}", "Idempotency-Key": "k"}
            alert = {
                "location": {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]},
                "kind": "personal",
                "needed": RESPONDERS,
            }
            raised = httpx.post(f"{server.base}/v1/alerts", json=alert, headers=headers, timeout=10)
            assert raised.status_code == 201, raised.text
            notified += raised.json()["notified_count"]
        queued = _outbox(fresh_database)
        assert len(queued) == notified > 2 * BATCH  # several batches wait; no worker ran yet
        assert set(queued.values()) == {"pending"}

        # First worker: killed outright as soon as its first sends reach the receiver.
        worker = _worker(env, tmp_path / "worker.log")
        deadline = time.monotonic() + 60
        while len(receiver.ids) < 2 and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.02)
        assert receiver.ids, "the worker sent nothing"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        at_kill = _outbox(fresh_database)
        in_flight = {d for d, s in at_kill.items() if s == "sending"}
        sent_before = set(receiver.ids)
        assert sent_before <= in_flight  # the kill came before the batch was recorded
        assert 0 < len(in_flight) <= BATCH

        # Second worker: everything else now, the dead worker's leases once they run out.
        worker = _worker(env, tmp_path / "worker.log")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = _outbox(fresh_database)
            if set(states.values()) == {"sent"}:
                break
            time.sleep(0.5)
        time.sleep(HOLD_S + 0.5)  # a late duplicate would still arrive
        states = _outbox(fresh_database)
        assert set(states.values()) == {"sent"}, Counter(states.values())

        received = Counter(receiver.ids)
        assert set(received) == set(queued)  # nothing lost
        repeated = {d for d, n in received.items() if n > 1}
        assert repeated <= in_flight  # only what the dead worker had in flight...
        assert all(received[d] == 2 for d in repeated)  # ...and only once more
        assert sum(received.values()) == len(queued) + len(repeated)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        code = server.stop()
        receiver.close()
    assert code == 0, server.output()[-4000:]
