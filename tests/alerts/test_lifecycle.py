"""Responses, closing, and what each party sees of an alert."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.alerts.escalation import EscalationWorker
from api.alerts.models import Alert, AlertResponder
from api.alerts.schemas import (
    AlertCoordinatorView,
    AlertPage,
    AlertRequesterView,
    AlertResponderView,
)
from api.alerts.service import purge_alerts
from api.members.repository import audit_events
from api.notify.models import Delivery
from tests.alerts.helpers import deliveries, post_alert
from tests.api.factories import auth


def raise_alert(api: TestClient, token: str, site: Any, *, needed: int = 1, **extra: Any) -> str:
    body = {"location": site.point(), "kind": "personal", "needed": needed, "note": "by the bridge"}
    body.update(extra)
    res = post_alert(api, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def answer(api: TestClient, token: str, alert_id: str, value: str) -> Any:
    return api.post(f"/v1/alerts/{alert_id}/responses", json={"answer": value}, headers=auth(token))


def get(api: TestClient, token: str, alert_id: str) -> Any:
    return api.get(f"/v1/alerts/{alert_id}", headers=auth(token))


class TestResponses:
    def test_answers_are_idempotent_and_may_change_while_open(self, api, site, crowd, make_member):
        _, token = make_member(roles=())
        alert_id = raise_alert(api, token, site, needed=2)
        _, first = crowd[0]
        one = answer(api, first, alert_id, "decline")
        two = answer(api, first, alert_id, "decline")
        assert one.status_code == two.status_code == 200
        assert one.json() == two.json()
        assert one.json()["state"] == "declined"
        changed = answer(api, first, alert_id, "accept")
        assert changed.status_code == 200
        assert AlertResponderView.model_validate(changed.json()).state == "accepted"
        assert answer(api, first, alert_id, "accept").json()["state"] == "accepted"

    def test_only_notified_members_may_answer(self, api, site, crowd, make_member):
        _, token = make_member(roles=())
        alert_id = raise_alert(api, token, site, needed=1)
        _, in_reserve = crowd[-1]
        _, stranger = make_member(roles=())
        for who in (in_reserve, stranger, token):
            res = answer(api, who, alert_id, "accept")
            assert res.status_code == 404
            assert res.json()["error"] == "AlertNotFound"
        assert answer(api, crowd[0][1], str(uuid.uuid4()), "accept").status_code == 404

    def test_a_bad_answer_is_422(self, api, site, crowd, make_member):
        _, token = make_member(roles=())
        alert_id = raise_alert(api, token, site)
        assert answer(api, crowd[0][1], alert_id, "maybe").status_code == 422


class TestClose:
    def test_the_requester_closes_and_everyone_notified_is_told(
        self, api, db, site, crowd, make_member, clock, session_factory, settings, graphs
    ):
        _, token = make_member(roles=())
        alert_id = raise_alert(api, token, site, needed=1)
        answer(api, crowd[0][1], alert_id, "decline")
        res = api.post(f"/v1/alerts/{alert_id}/close", headers=auth(token))
        assert res.status_code == 200
        view = AlertRequesterView.model_validate(res.json())
        assert view.status == "closed"
        assert view.closed_at == clock.now()
        closes = deliveries(db, alert_id, message_kind="close")
        assert {d.member_id for d in closes} == {m.id for m, _ in crowd[:3]}
        # Unsent alert messages of a closed alert are not delivered any more.
        assert {d.state for d in deliveries(db, alert_id, message_kind="alert")} == {"cancelled"}
        # Closing again changes nothing and sends nothing.
        again = api.post(f"/v1/alerts/{alert_id}/close", headers=auth(token))
        assert again.status_code == 200
        assert len(deliveries(db, alert_id, message_kind="close")) == len(closes)
        # No more waves, and answers can no longer change.
        clock.advance(10 * settings.wave_timeout_s)
        assert EscalationWorker(session_factory, settings, graphs, clock=clock).run_once() == 0
        assert answer(api, crowd[1][1], alert_id, "accept").status_code == 409
        assert answer(api, crowd[0][1], alert_id, "decline").status_code == 200

    def test_a_coordinator_closes_and_the_requester_is_told_too(
        self, api, db, site, crowd, place, coordinator
    ):
        requester, token = place(site, site.nodes_by_time()[300])
        alert_id = raise_alert(api, token, site, needed=1)
        _, coord = coordinator
        res = api.post(f"/v1/alerts/{alert_id}/close", headers=auth(coord))
        assert res.status_code == 200
        assert AlertCoordinatorView.model_validate(res.json()).status == "closed"
        told = {d.member_id for d in deliveries(db, alert_id, message_kind="close")}
        assert told == {m.id for m, _ in crowd[:3]} | {requester.id}

    def test_a_notified_member_may_not_close_and_others_do_not_see_it(
        self, api, site, crowd, make_member
    ):
        _, token = make_member(roles=())
        alert_id = raise_alert(api, token, site, needed=1)
        res = api.post(f"/v1/alerts/{alert_id}/close", headers=auth(crowd[0][1]))
        assert res.status_code == 403
        _, stranger = make_member(roles=())
        assert api.post(f"/v1/alerts/{alert_id}/close", headers=auth(stranger)).status_code == 404
        assert (
            api.post(f"/v1/alerts/{alert_id}/close", headers=auth(crowd[-1][1])).status_code == 404
        )


class TestVisibility:
    def test_the_requester_sees_who_accepted_with_rounded_etas_and_nothing_else(
        self, api, site, crowd, make_member, coordinator
    ):
        _, token = make_member(roles=())
        alert_id = raise_alert(api, token, site, needed=2)
        coord_view = AlertCoordinatorView.model_validate(get(api, coordinator[1], alert_id).json())
        tokens = {m.id: t for m, t in crowd}
        _, second, third = coord_view.responders[:3]
        answer(api, tokens[second.member_id], alert_id, "accept")
        answer(api, tokens[third.member_id], alert_id, "decline")
        res = get(api, token, alert_id)
        assert res.status_code == 200
        body = res.json()
        view = AlertRequesterView.model_validate(body)
        assert view.notified_count == 6
        assert [a.handle for a in view.accepted] == [second.handle]
        eta = view.accepted[0].eta_s
        assert eta % 30 == 0
        assert 0 <= eta - second.eta_s < 30
        text = res.text
        # Nobody else's id, handle or coordinates: only the accepted handle and the alert's point.
        for r in coord_view.responders:
            assert str(r.member_id) not in text
            if r.member_id != second.member_id:
                assert f'"{r.handle}"' not in text
        assert "responders" not in body
        assert body["location"] == site.point()

    def test_a_notified_member_sees_where_what_and_who_asked(self, api, site, crowd, place):
        requester, token = place(site, site.nodes_by_time()[300])
        alert_id = raise_alert(api, token, site, needed=1)
        res = get(api, crowd[0][1], alert_id)
        assert res.status_code == 200
        view = AlertResponderView.model_validate(res.json())
        assert view.location.coordinates == (site.lon, site.lat)
        assert view.kind == "personal"
        assert view.note == "by the bridge"
        assert view.requester_handle == requester.handle
        assert view.state == "notified"
        assert "accepted" not in res.json()
        assert "notified_count" not in res.json()

    def test_anyone_else_gets_404(self, api, site, crowd, make_member):
        _, token = make_member(roles=())
        alert_id = raise_alert(api, token, site, needed=1)
        _, stranger = make_member(roles=())
        in_reserve = crowd[-1][1]
        for who in (stranger, in_reserve):
            res = get(api, who, alert_id)
            assert res.status_code == 404
            assert res.json()["error"] == "AlertNotFound"
        assert get(api, token, str(uuid.uuid4())).status_code == 404
        assert api.get(f"/v1/alerts/{alert_id}").status_code == 401

    def test_a_coordinator_read_is_audited(self, api, db, site, crowd, make_member, coordinator):
        requester, token = make_member(roles=())
        alert_id = raise_alert(api, token, site, needed=1)
        coord, coord_token = coordinator
        assert get(api, coord_token, alert_id).status_code == 200
        events = [e for e in audit_events(db, subject_id=requester.id) if e.actor_id == coord.id]
        assert [e.action for e in events] == [f"alert.read:{alert_id}"]


class TestList:
    def test_coordinators_list_and_filter(self, api, site, crowd, make_member, coordinator, clock):
        _, token = make_member(roles=())
        _, coord = coordinator
        first = raise_alert(api, token, site, needed=1)
        clock.advance(600)
        second = raise_alert(api, token, site, needed=1, kind="defense")
        api.post(f"/v1/alerts/{first}/close", headers=auth(token))

        def listed(**params: Any) -> list[str]:
            res = api.get("/v1/alerts", params=params, headers=auth(coord))
            assert res.status_code == 200, res.text
            return [str(item.id) for item in AlertPage.model_validate(res.json()).items]

        assert listed() == [second, first]
        assert listed(status="closed") == [first]
        assert listed(kind="defense") == [second]
        assert listed(since=clock.now().isoformat()) == [second]
        assert listed(until=clock.now().isoformat()) == [first]
        assert listed(limit=1) == [second]
        assert listed(limit=1, offset=1) == [first]
        page = AlertPage.model_validate(api.get("/v1/alerts", headers=auth(coord)).json())
        assert page.items[1].notified_count == 3
        assert page.items[1].status == "closed"
        assert (
            api.get("/v1/alerts", params={"status": "lost"}, headers=auth(coord)).status_code == 422
        )

    def test_members_may_not_list(self, api, make_member):
        _, token = make_member(roles=("responder", "defense"))
        assert api.get("/v1/alerts", headers=auth(token)).status_code == 403


class TestPurge:
    def test_alerts_past_retention_go_with_their_ranking_and_outbox(
        self, api, db, site, crowd, make_member, clock
    ):
        _, token = make_member(roles=())
        old = raise_alert(api, token, site)
        api.post(f"/v1/alerts/{old}/close", headers=auth(token))
        never_closed = raise_alert(api, token, site)
        clock.advance(3600)
        recent = raise_alert(api, token, site)
        assert purge_alerts(db, before=clock.now() - timedelta(seconds=1)) == 2
        db.commit()
        left = db.scalars(select(Alert.id)).all()
        assert [str(a) for a in left] == [recent]
        for model in (AlertResponder, Delivery):
            ids = db.scalars(select(func.distinct(model.alert_id))).all()
            assert [str(a) for a in ids] == [recent]
        assert never_closed not in {str(a) for a in left}
