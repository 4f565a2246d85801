"""GET /healthz tells operators how long due notifications have waited for a worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.clock import ManualClock
from api.health import Health
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


def test_health_is_degraded_once_none_of_a_channels_last_n_deliveries_was_sent(
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
    settings = notify_settings.model_copy(
        update={"health_delivery_window": 5, "sms_base_url": None}
    )
    app = create_app(settings, engine=engine, session_factory=committed, graphs=graphs, clock=clock)
    client = TestClient(app)

    def health() -> dict[str, Any]:
        answer = client.get("/healthz")
        # failing deliveries do not take the API out of a load balancer
        assert answer.status_code == 200
        body: dict[str, Any] = Health.model_validate(answer.json()).model_dump()
        return body

    body = health()
    assert body["status"] == "ok"
    assert body["deliveries"]["webhook"]["status"] == "idle"
    assert body["deliveries"]["sms"] == {
        "configured": False,
        "status": "not configured",
        "recent": 0,
        "sent": 0,
        "failed": 0,
        "last_error": None,
    }
    # Four of five webhook deliveries fail for good: not yet the whole window.
    broken = [make_member(webhook_url="ftp://example.org/hook") for _ in range(4)]
    enqueue_committed(*broken)
    worker = make_worker(settings)
    assert worker.run_once() == 4
    webhooks = health()["deliveries"]["webhook"]
    assert (webhooks["status"], webhooks["recent"], webhooks["failed"]) == ("ok", 4, 4)
    assert webhooks["last_error"] == "the member's webhook URL is not http(s)"
    assert health()["status"] == "ok"
    # The fifth fails too: none of the last 5 was sent.
    enqueue_committed(make_member(webhook_url="ftp://example.org/hook"))
    assert worker.run_once() == 1
    body = health()
    assert body["status"] == "degraded"
    assert body["deliveries"]["webhook"]["status"] == "degraded"
    assert body["deliveries"]["webhook"]["sent"] == 0
    # SMS to an unconfigured gateway fails, but that channel is not configured: not degraded.
    enqueue_committed(*(make_member(phone="+358400000001") for _ in range(5)))
    assert worker.run_once() == 5
    assert health()["deliveries"]["sms"]["status"] == "not configured"
    # One webhook delivery arrives: the channel works again.
    enqueue_committed(make_member(webhook_url=webhook.url))
    assert worker.run_once() == 1
    body = health()
    assert body["status"] == "ok"
    assert body["deliveries"]["webhook"]["status"] == "ok"
    assert body["deliveries"]["webhook"]["sent"] == 1
