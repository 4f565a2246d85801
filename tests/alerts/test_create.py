"""POST /v1/alerts: validation, ranking, first wave, one transaction, idempotency, rate limit."""

from __future__ import annotations

import math

from sqlalchemy import select

from api.alerts.models import AlertResponder
from api.alerts.schemas import AlertRequesterView
from tests.alerts.helpers import deliveries, post_alert


def body(site, **extra):  # type: ignore[no-untyped-def]
    out = {"location": site.point(), "kind": "personal", "needed": 2, "note": "followed"}
    out.update(extra)
    return out


class TestRaise:
    def test_first_wave_and_outbox_are_committed_before_the_201(
        self, api, db, site, crowd, make_member
    ):  # type: ignore[no-untyped-def]
        _, token = make_member(roles=())
        res = post_alert(api, token, body(site))
        assert res.status_code == 201, res.text
        view = AlertRequesterView.model_validate(res.json())
        wave = math.ceil(2 / 0.35)
        assert view.status == "open"
        assert view.kind == "personal"
        assert view.ranking == "street_network"
        assert view.notified_count == wave
        assert view.accepted == []
        rows = db.scalars(select(AlertResponder).where(AlertResponder.alert_id == view.id)).all()
        assert len(rows) == len(crowd)
        notified = {r.member_id for r in rows if r.state == "notified"}
        assert len(notified) == wave
        sent = deliveries(db, view.id)
        assert {d.member_id for d in sent} == notified
        assert all(d.message_kind == "alert" and d.channel == "webhook" for d in sent)
        payload = sent[0].payload
        assert payload["alert"]["location"] == site.point()
        assert payload["alert"]["alert_id"] == str(view.id)
        assert payload["alert"]["note"] == "followed"
        assert payload["subject"] and payload["text"]
