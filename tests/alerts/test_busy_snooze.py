"""Busy and snoozed responders: left out of new alerts' rankings and messages, over HTTP."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from api.alerts.escalation import EscalationWorker
from api.alerts.schemas import AlertCoordinatorView
from tests.alerts.helpers import deliveries, post_alert
from tests.api.factories import auth


def raise_alert(api: TestClient, token: str, site: Any, **extra: Any) -> AlertCoordinatorView:
    body = {"location": site.point(), "kind": "personal", "needed": 1, **extra}
    res = post_alert(api, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    return AlertCoordinatorView.model_validate(res.json())


def ranked(view: AlertCoordinatorView) -> set[uuid.UUID]:
    return {r.member_id for r in view.responders}


def notified(db: Any, alert_id: uuid.UUID) -> set[uuid.UUID]:
    return {d.member_id for d in deliveries(db, alert_id, message_kind="alert")}


def snooze(api: TestClient, token: str, until: Any) -> Any:
    value = until.isoformat() if hasattr(until, "isoformat") else until
    return api.put("/v1/members/me/snooze", json={"until": value}, headers=auth(token))


def answer(api: TestClient, token: str, alert_id: uuid.UUID, value: str) -> Any:
    return api.post(f"/v1/alerts/{alert_id}/responses", json={"answer": value}, headers=auth(token))


class TestSnooze:
    def test_a_snoozed_member_is_neither_ranked_nor_notified_until_the_snooze_ends(
        self, api, db, site, crowd, coordinator, clock
    ):
        _, coord = coordinator
        nearest, token = crowd[0]
        until = clock.now() + timedelta(hours=2)
        res = snooze(api, token, until)
        assert res.status_code == 200, res.text
        assert res.json() == {"snoozed_until": until.isoformat().replace("+00:00", "Z")}
        view = raise_alert(api, coord, site)
        assert nearest.id not in ranked(view)
        assert nearest.id not in notified(db, view.id)
        assert crowd[1][0].id in notified(db, view.id)
        # One second before the end still snoozed; at the end it has ended by itself.
        clock.advance(2 * 3600 - 1)
        assert nearest.id not in ranked(raise_alert(api, coord, site))
        clock.advance(1)
        again = raise_alert(api, coord, site)
        assert again.responders[0].member_id == nearest.id
        assert nearest.id in notified(db, again.id)

    def test_delete_resumes_at_once_and_is_idempotent(self, api, site, crowd, coordinator, clock):
        _, coord = coordinator
        nearest, token = crowd[0]
        assert snooze(api, token, clock.now() + timedelta(days=1)).status_code == 200
        assert nearest.id not in ranked(raise_alert(api, coord, site))
        for _ in range(2):
            res = api.delete("/v1/members/me/snooze", headers=auth(token))
            assert res.status_code == 204
        assert raise_alert(api, coord, site).responders[0].member_id == nearest.id

    def test_past_too_far_naive_or_malformed_is_422_and_changes_nothing(
        self, api, site, crowd, coordinator, clock
    ):
        _, coord = coordinator
        nearest, token = crowd[0]
        now = clock.now()
        bad = [
            now - timedelta(seconds=1),
            now,
            now + timedelta(days=7, seconds=1),
            "2026-11-24T13:00:00",  # no UTC offset
            "tomorrow",
        ]
        for until in bad:
            res = snooze(api, token, until)
            assert res.status_code == 422, (until, res.text)
            assert res.json()["error"] in {"SnoozeOutOfRange", "ValidationError"}
        extra = api.put(
            "/v1/members/me/snooze",
            json={"until": (now + timedelta(hours=1)).isoformat(), "why": "x"},
            headers=auth(token),
        )
        assert extra.status_code == 422
        assert snooze(api, token, now + timedelta(days=7)).status_code == 200
        api.delete("/v1/members/me/snooze", headers=auth(token))
        assert raise_alert(api, coord, site).responders[0].member_id == nearest.id

    def test_without_a_token_401(self, api, clock):
        until = (clock.now() + timedelta(hours=1)).isoformat()
        assert api.put("/v1/members/me/snooze", json={"until": until}).status_code == 401
        assert api.delete("/v1/members/me/snooze").status_code == 401

    def test_a_coordinator_sees_until_when_and_nobody_else_does(
        self, api, crowd, coordinator, clock
    ):
        _, coord = coordinator
        member, token = crowd[0]
        _, other_token = crowd[1]
        until = clock.now() + timedelta(hours=3)
        snooze(api, token, until)
        seen = api.get(f"/v1/members/{member.id}", headers=auth(coord)).json()
        assert seen["snoozed_until"] == until.isoformat().replace("+00:00", "Z")
        assert api.get("/v1/members/me", headers=auth(token)).json()["snoozed_until"] is not None
        assert api.get(f"/v1/members/{member.id}", headers=auth(other_token)).status_code == 404
        assert api.get("/v1/members/me", headers=auth(other_token)).json()["snoozed_until"] is None
        clock.advance(3 * 3600)
        after = api.get(f"/v1/members/{member.id}", headers=auth(coord)).json()
        assert after["snoozed_until"] is None

    def test_a_reserve_member_who_snoozes_is_passed_over_by_the_next_wave(
        self, api, db, site, crowd, coordinator, clock, session_factory, settings, graphs
    ):
        _, coord = coordinator
        view = raise_alert(api, coord, site)
        first = notified(db, view.id)
        reserve = [r.member_id for r in view.responders if r.member_id not in first]
        tokens = {m.id: t for m, t in crowd}
        snoozer = reserve[0]
        assert snooze(api, tokens[snoozer], clock.now() + timedelta(hours=1)).status_code == 200
        clock.advance(settings.wave_timeout_s)
        worker = EscalationWorker(session_factory, settings, graphs, clock=clock)
        assert worker.run_once() == 1
        second = notified(db, view.id) - first
        assert second
        assert snoozer not in second
        assert reserve[1] in second


class TestBusy:
    def test_a_member_on_the_way_is_left_out_until_the_alert_closes(
        self, api, db, site, crowd, coordinator
    ):
        _, coord = coordinator
        nearest, token = crowd[0]
        first = raise_alert(api, coord, site)
        assert answer(api, token, first.id, "accept").json()["state"] == "accepted"
        # Fulfilled is still open: the member is on the way.
        busy = raise_alert(api, coord, site)
        assert nearest.id not in ranked(busy)
        assert nearest.id not in notified(db, busy.id)
        res = api.post(f"/v1/alerts/{first.id}/close", headers=auth(coord))
        assert res.status_code == 200
        assert raise_alert(api, coord, site).responders[0].member_id == nearest.id

    def test_withdrawing_frees_the_member(self, api, site, crowd, coordinator):
        _, coord = coordinator
        nearest, token = crowd[0]
        first = raise_alert(api, coord, site, needed=2)
        answer(api, token, first.id, "accept")
        assert nearest.id not in ranked(raise_alert(api, coord, site))
        assert answer(api, token, first.id, "decline").json()["state"] == "declined"
        assert raise_alert(api, coord, site).responders[0].member_id == nearest.id

    def test_a_coordinator_may_include_busy_members_in_a_mass_alert(
        self, api, db, site, crowd, coordinator, make_member
    ):
        _, coord = coordinator
        nearest, token = crowd[0]
        first = raise_alert(api, coord, site)
        answer(api, token, first.id, "accept")
        plain = raise_alert(api, coord, site, kind="mass")
        assert nearest.id not in ranked(plain)
        mass = raise_alert(api, coord, site, kind="mass", include_busy=True)
        assert nearest.id in ranked(mass)
        assert nearest.id in notified(db, mass.id)
        # Members may not; personal and defence alerts never include busy members.
        _, member = make_member(roles=())
        body = {"location": site.point(), "kind": "mass", "needed": 1, "include_busy": True}
        res = post_alert(api, member, body, key=str(uuid.uuid4()))
        assert res.status_code == 403
        body["kind"] = "personal"
        res = post_alert(api, coord, body, key=str(uuid.uuid4()))
        assert res.status_code == 422

    def test_snoozed_members_stay_out_even_of_an_include_busy_mass_alert(
        self, api, site, crowd, coordinator, clock
    ):
        _, coord = coordinator
        nearest, token = crowd[0]
        snooze(api, token, clock.now() + timedelta(hours=1))
        mass = raise_alert(api, coord, site, kind="mass", include_busy=True)
        assert nearest.id not in ranked(mass)
