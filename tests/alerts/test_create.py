"""POST /v1/alerts: validation, ranking, first wave, one transaction, idempotency, rate limit."""

from __future__ import annotations

import math

from sqlalchemy import select

from api.alerts.models import Alert, AlertResponder
from api.alerts.schemas import AlertCoordinatorView, AlertRequesterView
from api.notify.models import Delivery
from tests.alerts.helpers import count_rows, deliveries, post_alert
from tests.api.factories import auth


def body(site, **extra):
    out = {"location": site.point(), "kind": "personal", "needed": 2, "note": "followed"}
    out.update(extra)
    return out


class TestRaise:
    def test_first_wave_and_outbox_are_committed_before_the_201(
        self, api, db, site, crowd, make_member
    ):
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

    def test_requester_is_never_ranked(self, api, db, site, place):
        nodes = site.nodes_by_time()
        requester, token = place(site, nodes[0])
        others = [place(site, n) for n in nodes[20:23]]
        res = post_alert(api, token, body(site, needed=1))
        assert res.status_code == 201, res.text
        ranked = db.scalars(
            select(AlertResponder.member_id).where(AlertResponder.alert_id == res.json()["id"])
        ).all()
        assert requester.id not in ranked
        assert set(ranked) == {m.id for m, _ in others}

    def test_missing_idempotency_key_is_422(self, api, site, make_member):
        _, token = make_member()
        res = post_alert(api, token, body(site), key=None)
        assert res.status_code == 422
        assert "Idempotency-Key" in res.json()["detail"]

    def test_without_token_is_401(self, api, site):
        res = api.post("/v1/alerts", json=body(site), headers={"Idempotency-Key": "x"})
        assert res.status_code == 401

    def test_without_token_a_bad_body_is_still_401(self, api):
        # The token is checked before the body: an anonymous caller learns nothing more.
        res = api.post("/v1/alerts", json={"kind": "nope"}, headers={"Idempotency-Key": "x"})
        assert res.status_code == 401
        assert res.headers["WWW-Authenticate"] == "Bearer"

    def test_an_unknown_or_revoked_token_is_401_and_nothing_is_stored(
        self, api, db, site, crowd, make_member
    ):
        _, token = make_member(roles=())
        before = (count_rows(db, Alert), count_rows(db, Delivery))
        res = post_alert(api, "x" * 43, body(site), key="unknown")
        assert res.status_code == 401
        assert api.delete("/v1/members/me/token", headers=auth(token)).status_code == 204
        res = post_alert(api, token, body(site), key="revoked")
        assert res.status_code == 401
        db.expire_all()
        assert (count_rows(db, Alert), count_rows(db, Delivery)) == before

    def test_invalid_bodies_are_422(self, api, db, site, make_member):
        _, token = make_member()
        before = count_rows(db, Alert)
        bad = [
            body(site, needed=0),
            body(site, needed=101),
            body(site, kind="riot"),
            body(site, note="x" * 501),
            body(site, location={"type": "Point", "coordinates": [200, 60]}),
            body(site, location={"type": "LineString", "coordinates": [[24, 60], [25, 60]]}),
            body(site, colour="red"),
        ]
        for i, b in enumerate(bad):
            res = post_alert(api, token, b, key=f"bad{i}")
            assert res.status_code == 422, (b, res.text)
            assert res.json()["error"] == "ValidationError"
        assert count_rows(db, Alert) == before

    def test_outside_service_area_is_422_and_nothing_is_stored(self, api, db, crowd, make_member):
        _, token = make_member()
        before = count_rows(db, Alert)
        far = {
            "location": {"type": "Point", "coordinates": [25.5, 60.5]},
            "kind": "personal",
            "needed": 1,
        }
        res = post_alert(api, token, far)
        assert res.status_code == 422
        assert res.json()["error"] == "OutsideServiceArea"
        assert count_rows(db, Alert) == before

    def test_at_and_exercise_are_for_coordinators(self, api, db, site, crowd, make_member):
        _, token = make_member()
        for i, extra in enumerate(({"at": "2026-11-24T03:00:00+02:00"}, {"exercise": True})):
            res = post_alert(api, token, body(site, **extra), key=f"c{i}")
            assert res.status_code == 403
            assert res.json()["error"] == "CoordinatorOnly"
        assert count_rows(db, Alert) == 0

    def test_a_coordinator_sees_the_full_ranking_in_the_answer(self, api, site, crowd, coordinator):
        _, token = coordinator
        res = post_alert(api, token, body(site, needed=1))
        assert res.status_code == 201
        view = AlertCoordinatorView.model_validate(res.json())
        assert [r.member_id for r in view.responders] == [m.id for m, _ in crowd]
        etas = [r.eta_s for r in view.responders]
        assert etas == sorted(etas)
        assert [r.wave for r in view.responders] == [1, 1, 1] + [None] * 9
        assert view.next_wave_at is not None


class TestExercise:
    def test_exercise_is_ranked_and_recorded_but_delivers_nothing(
        self, api, db, site, crowd, coordinator
    ):
        _, token = coordinator
        res = post_alert(api, token, body(site, needed=1, exercise=True))
        assert res.status_code == 201
        view = AlertCoordinatorView.model_validate(res.json())
        assert view.exercise is True
        assert view.notified_count == 0
        assert [r.state for r in view.responders][:4] == ["exercise"] * 3 + ["ranked"]
        assert view.next_wave_at is None
        assert deliveries(db, view.id) == []

    def test_a_notified_exercise_member_cannot_see_or_answer_it(
        self, api, site, crowd, coordinator
    ):
        _, token = coordinator
        alert_id = post_alert(api, token, body(site, needed=1, exercise=True)).json()["id"]
        _, first_token = crowd[0]
        assert api.get(f"/v1/alerts/{alert_id}", headers=auth(first_token)).status_code == 404
        res = api.post(
            f"/v1/alerts/{alert_id}/responses", json={"answer": "accept"}, headers=auth(first_token)
        )
        assert res.status_code == 404


class TestPresenceTime:
    def test_at_evaluates_presence_then(self, api, site, place, coordinator):
        nodes = site.nodes_by_time()
        night_owl, _ = place(site, nodes[10])
        sleeper, _ = place(site, nodes[20], quiet_hours={"start": "23:00", "end": "07:00"})
        _, token = coordinator
        at_night = post_alert(
            api, token, body(site, needed=1, at="2026-11-24T03:00:00+02:00"), key="night"
        )
        at_noon = post_alert(
            api, token, body(site, needed=1, at="2026-11-24T12:00:00+02:00"), key="noon"
        )
        night = AlertCoordinatorView.model_validate(at_night.json())
        noon = AlertCoordinatorView.model_validate(at_noon.json())
        assert [r.member_id for r in night.responders] == [night_owl.id]
        assert [r.member_id for r in noon.responders] == [night_owl.id, sleeper.id]

    def test_naive_at_is_422(self, api, site, coordinator):
        _, token = coordinator
        res = post_alert(api, token, body(site, at="2026-11-24T03:00:00"))
        assert res.status_code == 422


class TestKinds:
    def test_personal_goes_to_responders_and_defense_only(self, api, site, place, coordinator):
        nodes = site.nodes_by_time()
        resp, _ = place(site, nodes[10], roles=("responder",))
        defender, _ = place(site, nodes[20], roles=("defense",))
        place(site, nodes[30], roles=())
        _, token = coordinator
        view = post_alert(api, token, body(site, needed=1)).json()
        assert [r["member_id"] for r in view["responders"]] == [str(resp.id), str(defender.id)]

    def test_defense_goes_to_defense_volunteers_only(self, api, site, place, coordinator):
        nodes = site.nodes_by_time()
        place(site, nodes[10], roles=("responder",))
        defender, _ = place(site, nodes[20], roles=("responder", "defense"))
        _, token = coordinator
        view = post_alert(api, token, body(site, kind="defense", needed=1)).json()
        assert [r["member_id"] for r in view["responders"]] == [str(defender.id)]

    def test_mass_notifies_everyone_in_reach_at_once(self, api, db, site, place, make_member):
        nodes = site.nodes_by_time()
        members = [
            place(site, n, roles=roles)
            for n, roles in zip(
                nodes[10:70:6], [("responder",), ("defense",), ()] * 4, strict=False
            )
        ]
        _, token = make_member(roles=("coordinator",))
        res = post_alert(api, token, body(site, kind="mass", needed=1))
        view = AlertCoordinatorView.model_validate(res.json())
        ids = {m.id for m, _ in members}
        assert ids <= {r.member_id for r in view.responders}
        assert all(r.wave == 1 and r.state == "notified" for r in view.responders)
        assert view.notified_count == len(view.responders)
        assert view.next_wave_at is None
        assert {d.member_id for d in deliveries(db, view.id)} == ids
