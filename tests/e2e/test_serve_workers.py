"""`ern serve` and its workers: uvicorn processes on one port, the outbox beside them.

By default `ern serve` runs the outbox and escalation workers as one child process (`ern
worker`), restarted if it dies and gone when the server goes, however the server ends.
With ERN_WORKER_PROCESS=false each server process runs its own (leased in the database, so
one alert still reaches a webhook once).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
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
STARTED = re.compile(r"worker process started \(pid (\d+)\)")


class Service:
    """`ern serve --workers N` on a free port with a responder whose webhook is ``receiver``."""

    def __init__(self, env: dict[str, str], log: Path, *, workers: int, tag: str) -> None:
        token = ern(env, "admin", "create-coordinator", "--handle", f"{tag}-coord")
        self.coord = {"Authorization": f"Bearer {token.strip().splitlines()[-1]}"}
        self.receiver = Receiver()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*ERN, "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(workers), "--no-access-log"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.tag = tag
        self.asker: dict[str, str] = {}
        self.raised = 0

    def setup_members(self) -> dict[str, Any]:
        health = wait_healthy(self.base, self.proc, self.log)
        responder = member_body(
            f"{self.tag}-rosa",
            roles=["responder"],
            mode="walk",
            contact={"webhook_url": self.receiver.url},
        )
        created = httpx.post(f"{self.base}/v1/members", json=responder, headers=self.coord)
        assert created.status_code == 201, created.text
        requester = member_body(
            f"{self.tag}-ana", roles=[], lon=HELSINKI_LON + 0.004, lat=HELSINKI_LAT
        )
        made = httpx.post(f"{self.base}/v1/members", json=requester, headers=self.coord)
        assert made.status_code == 201, made.text
        self.asker = {"Authorization": f"Bearer {made.json()['token']}"}
        return health

    def alert_is_delivered_once(self) -> None:
        self.raised += 1
        headers = {**self.asker, "Idempotency-Key": f"{self.tag}-{self.raised}"}
        raised = httpx.post(f"{self.base}/v1/alerts", json=ALERT, headers=headers)
        assert raised.status_code == 201, raised.text
        assert raised.json()["notified_count"] == 1
        self.receiver.wait_for(self.raised)
        assert len(self.receiver.accepted()) == self.raised, self.receiver.requests

    def worker_pids(self) -> list[int]:
        return [int(p) for p in STARTED.findall(self.output())]

    def wait_for_worker(self, count: int, timeout_s: float = 60.0) -> int:
        """The pid of the ``count``-th worker process started, once it is delivering."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.output()
            delivering = text.count("ern worker: delivering")
            if len(STARTED.findall(text)) >= count and delivering >= count:
                return self.worker_pids()[count - 1]
            time.sleep(0.2)
        pytest.fail(f"worker process {count} did not start:\n{self.output()[-4000:]}")

    def stop(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the server's whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.receiver.close()

    def output(self) -> str:
        return self.log.read_text()

    def clean_output(self, code: int) -> str:
        """The output of a service that exited with ``code``: 0, and no traceback."""
        output = self.output()
        assert code == 0, output[-4000:]
        assert "Traceback" not in output
        return output


def gone(pid: int) -> bool:
    """No such process, or one that exited and waits to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def env(fresh_database: str, graphs: Any, graph_dir: Path, tmp_path: Path) -> dict[str, str]:
    env = server_env(fresh_database, graph_dir, tmp_path / "var")
    ern(env, "db", "upgrade")
    return env


def test_one_worker_process_serves_two_server_processes_and_is_restarted_when_it_dies(
    env: dict[str, str], tmp_path: Path
) -> None:
    service = Service(env, tmp_path / "serve.log", workers=2, tag="wp")
    try:
        health = service.setup_members()
        assert health["database"] == "ok" and set(health["graphs"]) == {"walk", "bike", "drive"}
        first = service.wait_for_worker(1)
        service.alert_is_delivered_once()
        # fresh connections, so either server process may answer: all see the same database
        for _ in range(6):
            assert httpx.get(f"{service.base}/healthz").status_code == 200

        os.kill(first, signal.SIGKILL)
        second = service.wait_for_worker(2)
        assert second != first and not gone(second)
        service.alert_is_delivered_once()
    finally:
        code = service.stop()
    output = service.clean_output(code)
    assert "exited with -9; restarting" in output
    assert output.count("restarting") == 1  # not again while the server stopped
    # Ctrl-C reached the server alone, which then stopped its worker
    assert "SIGINT: stopping" not in output
    assert "SIGTERM: stopping after the current batch" in output
    # one worker at a time, both gone with the server; two server processes
    assert service.worker_pids() == [first, second]
    assert gone(first) and gone(second)
    assert len(set(re.findall(r"Started server process \[(\d+)\]", output))) == 2, output[-4000:]
    assert "POST /v1/alerts" not in output  # --no-access-log


def test_the_worker_process_stops_by_itself_when_the_server_is_killed(
    env: dict[str, str], tmp_path: Path
) -> None:
    service = Service(env, tmp_path / "serve.log", workers=1, tag="wk")
    try:
        service.setup_members()
        child = service.wait_for_worker(1)
        service.proc.kill()  # SIGKILL: the server cannot stop its child
        service.proc.wait()
        assert wait_gone(child, timeout_s=20), service.output()[-4000:]
        assert "is gone: stopping after the current batch" in service.output()
    finally:
        if service.proc.poll() is None:
            service.proc.kill()
        service.receiver.close()


def test_with_worker_process_off_each_server_process_delivers_itself(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "ERN_WORKER_PROCESS": "false"}
    service = Service(env, tmp_path / "serve.log", workers=2, tag="wi")
    try:
        service.setup_members()
        service.alert_is_delivered_once()
    finally:
        code = service.stop()
    output = service.clean_output(code)
    assert service.worker_pids() == []
    assert len(set(re.findall(r"Started server process \[(\d+)\]", output))) == 2, output[-4000:]
