"""GET /healthz tells operators how long due notifications have waited for a worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.clock import ManualClock
from api.main import create_app
from api.settings import Settings
from tests.notify.conftest import HttpReceiver, deliveries

# Long before every other test's rows: only this test's delivery is due at these times.
LONG_AGO = datetime(1990, 5, 1, 8, 0, tzinfo=UTC)


def test_outbox_lag_grows_while_nothing_delivers_and_is_zero_once_sent(
    engine: Engine,
    committed: sessionmaker[Session],
    graphs: Any,
    notify_settings: Settings,
    clock: ManualClock,
    make_member: Any,
    enqueue_committed: Any,
    make_worker: Any,
    webhook: HttpReceiver,
) -> None:
    clock.set(LONG_AGO)
    app = create_app(
        notify_settings, engine=engine, session_factory=committed, graphs=graphs, clock=clock
    )
    client = TestClient(app)

    def lag() -> float:
        answer = client.get("/healthz")
        # a lagging outbox does not take the API out of a load balancer
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
        value: float = answer.json()["outbox_lag_s"]
        return value

    assert lag() == 0.0
    alert_id = enqueue_committed(make_member(webhook_url=webhook.url))
    assert lag() == 0.0  # due now, not yet waiting
    clock.advance(90)
    assert lag() == 90.0
    assert make_worker().run_once() == 1
    assert [d.state for d in deliveries(committed, alert_id)] == ["sent"]
    assert lag() == 0.0
    clock.advance(600)
    assert lag() == 0.0
