"""`ern worker` as a real process: delivers queued messages and exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import REPO, TEST_SECRET
from tests.notify.conftest import HttpReceiver, deliveries


def test_worker_command_delivers_and_stops_on_sigterm(
    make_member,
    enqueue_committed,
    webhook: HttpReceiver,
    committed: sessionmaker[Session],
    database_url: str,
) -> None:
    member = make_member(webhook_url=f"{webhook.url}/cli")
    alert_id = enqueue_committed(member)
    env = {
        **os.environ,
        "ERN_DATABASE_URL": database_url,
        "ERN_SECRET_KEY": TEST_SECRET,
        "ERN_WORKER_POLL_S": "0.1",
        "ERN_DELIVERY_TIMEOUT_S": "3",
        "ERN_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on 127.0.0.1
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import app; app()", "worker", "--batch-size", "5"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not webhook.requests and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert [r.path for r in webhook.requests] == ["/cli"]
        deadline = time.monotonic() + 20
        while deliveries(committed, alert_id)[0].state != "sent" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert deliveries(committed, alert_id)[0].state == "sent"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "ern worker stopped" in output
