"""Retention: the escalation worker deletes expired live locations and alerts past retention."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.alerts.escalation import EscalationWorker
from api.alerts.models import Alert, AlertResponder
from api.notify.models import Delivery
from api.presence.models import MemberLocation
from tests.alerts.helpers import post_alert
from tests.api.factories import auth


def raise_alert(api: TestClient, token: str, site: Any) -> str:
    body = {"location": site.point(), "kind": "personal", "needed": 1}
    res = post_alert(api, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def put_location(api: TestClient, token: str, site: Any) -> None:
    res = api.put("/v1/members/me/location", json={"location": site.point()}, headers=auth(token))
    assert res.status_code == 200, res.text


def count(db: Any, model: Any, *where: Any) -> int:
    return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


class TestPurge:
    def test_expired_locations_and_old_alerts_go_recent_ones_stay(
        self, api, db, site, crowd, make_member, clock, session_factory, settings, graphs
    ):
        worker = EscalationWorker(session_factory, settings, graphs, clock=clock)
        _, token = make_member(roles=())
        _, live_token = make_member(roles=())
        closed = raise_alert(api, token, site)
        assert api.post(f"/v1/alerts/{closed}/close", headers=auth(token)).status_code == 200
        put_location(api, live_token, site)
        assert count(db, Delivery, Delivery.alert_id == closed) > 0

        clock.advance(settings.live_location_ttl_s + 1)
        purged = worker.purge_once()
        assert (purged.alerts, purged.live_locations) == (0, 1)
        assert count(db, MemberLocation) == 0
        assert count(db, Alert, Alert.id == closed) == 1

        retention_s = settings.alert_retention_days * 86400
        clock.advance(retention_s - 120)
        still_open = raise_alert(api, token, site)  # raised, never closed: kept from its raising
        clock.advance(120)
        assert worker.purge_once().alerts == 1
        assert count(db, Alert, Alert.id == closed) == 0
        assert count(db, AlertResponder, AlertResponder.alert_id == closed) == 0
        assert count(db, Delivery, Delivery.alert_id == closed) == 0
        assert count(db, Alert, Alert.id == still_open) == 1

        clock.advance(retention_s)
        assert worker.purge_once().alerts == 1
        assert count(db, Alert, Alert.id == still_open) == 0

    def test_the_pass_logs_each_kind_it_deleted_by_count_only(
        self, api, site, crowd, make_member, clock, session_factory, settings, graphs, caplog
    ):
        worker = EscalationWorker(session_factory, settings, graphs, clock=clock)
        _, token = make_member(roles=())
        _, live_token = make_member(roles=())
        raise_alert(api, token, site)
        put_location(api, live_token, site)
        clock.advance(settings.alert_retention_days * 86400 + 1)
        with caplog.at_level("INFO", logger="ern.escalation"):
            worker.purge_once()
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention:")]
        assert lines == ["retention: deleted 1 alerts, 1 live locations"], lines
        caplog.clear()
        with caplog.at_level("INFO", logger="ern.escalation"):
            worker.purge_once()
        assert not [r for r in caplog.records if r.getMessage().startswith("retention:")]

    def test_the_running_worker_purges_on_its_interval(
        self, committed, site, clock, settings, graphs
    ):
        client = TestClient(committed["app"], raise_server_exceptions=False)
        put_location(client, committed["tokens"]["r1"], site)
        clock.advance(settings.live_location_ttl_s + 1)
        hourly = settings.model_copy(update={"purge_interval_s": 3600.0})
        worker = EscalationWorker(committed["factory"], hourly, graphs, clock=clock)
        # The thread makes its first pass (escalation, then retention) before it first waits.
        worker.start()
        worker.stop()
        with committed["factory"]() as session:
            assert count(session, MemberLocation) == 0
        # Not again before purge_interval_s has passed on the worker's clock.
        put_location(client, committed["tokens"]["r1"], site)
        clock.advance(settings.live_location_ttl_s + 1)
        worker.purge_if_due()
        with committed["factory"]() as session:
            assert count(session, MemberLocation) == 1
        clock.advance(3600 - settings.live_location_ttl_s)
        worker.purge_if_due()
        with committed["factory"]() as session:
            assert count(session, MemberLocation) == 0
