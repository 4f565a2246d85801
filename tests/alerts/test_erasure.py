"""DELETE /v1/members/me: a member erases itself; its alerts keep counts, never its name."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.alerts.models import Alert, AlertResponder, ErasedResponse
from api.alerts.schemas import AlertCoordinatorView, AlertPage, AlertRequesterView
from api.members.models import ApiToken, AuditEvent, Member, MemberRoute, MemberZone
from api.notify.models import Delivery
from api.presence.models import MemberLocation
from tests.alerts.helpers import post_alert
from tests.api.factories import auth, full_member_body


def raise_alert(api: TestClient, token: str, site: Any, *, needed: int = 2) -> str:
    body = {"location": site.point(), "kind": "personal", "needed": needed}
    res = post_alert(api, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def rows(db: Session, model: Any, member_id: uuid.UUID) -> int:
    db.expire_all()
    stmt = select(func.count()).select_from(model).where(model.member_id == member_id)
    return int(db.scalar(stmt) or 0)


class TestEraseMe:
    def test_everything_of_the_member_goes_and_its_token_stops_at_once(
        self, api: TestClient, db: Session, site: Any, coordinator: Any
    ) -> None:
        _, coord = coordinator
        body = full_member_body(lon=site.lon, lat=site.lat)
        made = api.post("/v1/members", json=body, headers=auth(coord))
        assert made.status_code == 201, made.text
        member_id = uuid.UUID(made.json()["member"]["id"])
        token = made.json()["token"]
        here = {"location": site.point()}
        assert api.put("/v1/members/me/location", json=here, headers=auth(token)).status_code == 200
        second = api.post(f"/v1/members/{member_id}/token", headers=auth(coord)).json()["token"]
        assert rows(db, MemberZone, member_id) and rows(db, MemberRoute, member_id)

        r = api.delete("/v1/members/me", headers=auth(second))
        assert r.status_code == 204
        assert r.content == b""
        assert api.get("/v1/members/me", headers=auth(second)).status_code == 401
        assert api.delete("/v1/members/me", headers=auth(second)).status_code == 401
        for model in (MemberZone, MemberRoute, MemberLocation, ApiToken, Delivery):
            assert rows(db, model, member_id) == 0, model.__name__
        assert db.get(Member, member_id) is None
        assert api.get(f"/v1/members/{member_id}", headers=auth(coord)).status_code == 404

    def test_anonymous_is_401(self, api: TestClient) -> None:
        assert api.delete("/v1/members/me").status_code == 401

    def test_past_alerts_keep_counts_and_no_longer_name_it(
        self,
        api: TestClient,
        db: Session,
        site: Any,
        crowd: list[Any],
        make_member: Any,
        coordinator: Any,
    ) -> None:
        _, coord = coordinator
        _, req_token = make_member(roles=())
        alert_id = raise_alert(api, req_token, site, needed=2)
        before = AlertCoordinatorView.model_validate(
            api.get(f"/v1/alerts/{alert_id}", headers=auth(coord)).json()
        )
        notified = [r for r in before.responders if r.state == "notified"]
        assert len(notified) >= 2
        by_id = {str(m.id): t for m, t in crowd}
        leaver_id, stayer_id = str(notified[0].member_id), str(notified[1].member_id)
        for who in (leaver_id, stayer_id):
            url = f"/v1/alerts/{alert_id}/responses"
            res = api.post(url, json={"answer": "accept"}, headers=auth(by_id[who]))
            assert res.status_code == 200, res.text

        # The leaver and the requester both erase themselves.
        assert api.delete("/v1/members/me", headers=auth(by_id[leaver_id])).status_code == 204
        listed = AlertPage.model_validate(api.get("/v1/alerts", headers=auth(coord)).json()).items
        summary_before = next(a for a in listed if str(a.id) == alert_id)
        assert api.delete("/v1/members/me", headers=auth(req_token)).status_code == 204

        after = AlertCoordinatorView.model_validate(
            api.get(f"/v1/alerts/{alert_id}", headers=auth(coord)).json()
        )
        assert after.notified_count == before.notified_count
        assert after.requester_id is None and after.requester_handle is None
        assert leaver_id not in {str(r.member_id) for r in after.responders}
        assert [a.handle for a in after.accepted] == [
            h for h in (r.handle for r in after.responders if r.state == "accepted")
        ]
        assert len(after.accepted) == 1
        summary = next(
            a
            for a in AlertPage.model_validate(
                api.get("/v1/alerts", headers=auth(coord)).json()
            ).items
            if str(a.id) == alert_id
        )
        assert summary.accepted_count == summary_before.accepted_count == 2
        assert summary.notified_count == before.notified_count
        assert summary.requester_handle is None
        db.expire_all()
        assert db.get(Alert, uuid.UUID(alert_id)) is not None
        kept = db.scalars(
            select(ErasedResponse.state).where(ErasedResponse.alert_id == uuid.UUID(alert_id))
        ).all()
        assert kept == ["accepted"]
        stmt = select(AlertResponder).where(AlertResponder.member_id == uuid.UUID(leaver_id))
        assert db.scalars(stmt).all() == []
        # The stayer still sees the alert, now without a requester.
        seen = api.get(f"/v1/alerts/{alert_id}", headers=auth(by_id[stayer_id])).json()
        assert seen["requester_handle"] is None

    def test_the_audit_row_says_an_erasure_happened_not_what(
        self, api: TestClient, db: Session, make_member: Any, coordinator: Any
    ) -> None:
        _, coord = coordinator
        member, token = make_member(roles=())
        assert api.get(f"/v1/members/{member.id}", headers=auth(coord)).status_code == 200
        last_id = db.scalar(select(func.max(AuditEvent.id))) or 0
        assert api.delete("/v1/members/me", headers=auth(token)).status_code == 204
        db.expire_all()
        new = db.scalars(select(AuditEvent).where(AuditEvent.id > last_id)).all()
        assert [(e.action, e.actor_id, e.subject_id) for e in new] == [("member.erase", None, None)]

    def test_a_coordinator_deletion_is_still_audited_with_whom(
        self, api: TestClient, db: Session, make_member: Any, coordinator: Any
    ) -> None:
        coord_member, coord = coordinator
        member, _ = make_member(roles=())
        member_id, coord_id = member.id, coord_member.id
        assert api.delete(f"/v1/members/{member_id}", headers=auth(coord)).status_code == 204
        db.expire_all()
        event = db.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).one()
        assert (event.action, event.actor_id, event.subject_id) == (
            "member.delete",
            coord_id,
            member_id,
        )

    def test_the_requester_view_keeps_counts(
        self, api: TestClient, site: Any, crowd: list[Any], make_member: Any, coordinator: Any
    ) -> None:
        _, coord = coordinator
        _, req_token = make_member(roles=())
        alert_id = raise_alert(api, req_token, site, needed=1)
        view = api.get(f"/v1/alerts/{alert_id}", headers=auth(coord)).json()
        first = next(r for r in view["responders"] if r["state"] == "notified")
        token = {str(m.id): t for m, t in crowd}[first["member_id"]]
        before = AlertRequesterView.model_validate(
            api.get(f"/v1/alerts/{alert_id}", headers=auth(req_token)).json()
        )
        assert api.delete("/v1/members/me", headers=auth(token)).status_code == 204
        after = AlertRequesterView.model_validate(
            api.get(f"/v1/alerts/{alert_id}", headers=auth(req_token)).json()
        )
        assert after.notified_count == before.notified_count
