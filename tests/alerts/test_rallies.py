"""Rally notices over HTTP: those usually near a place at a time get it; only a count comes back."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from api.alerts.schemas import AlertCoordinatorView
from api.cli.purge import run_purge
from api.notify.models import Delivery
from api.rallies.models import Rally
from tests.alerts.helpers import post_alert
from tests.api.factories import auth


def rally(api: Any, token: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = auth(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.post("/v1/rallies", json=body, headers=headers)


def body_for(site: Any, clock: Any, minutes: int, **extra: Any) -> dict[str, Any]:
    at = (clock.now() - timedelta(hours=1)).isoformat()
    return {
        "location": site.point(),
        "at": at,
        "minutes": minutes,
        "text": "Thank you all",
        **extra,
    }


def etas(api: Any, token: str, site: Any, clock: Any) -> dict[uuid.UUID, float]:
    """Everyone's ETA at the rally's time, from a mass exercise (ranks all, sends nothing)."""
    at = (clock.now() - timedelta(hours=1)).isoformat()
    body = {"location": site.point(), "kind": "mass", "needed": 1, "at": at, "exercise": True}
    res = post_alert(api, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    view = AlertCoordinatorView.model_validate(res.json())
    return {r.member_id: r.eta_s for r in view.responders}


def recipients(db: Any, rally_id: str) -> set[uuid.UUID]:
    rows = db.scalars(select(Delivery).where(Delivery.alert_id == uuid.UUID(rally_id))).all()
    assert {r.message_kind for r in rows} <= {"rally"}
    return {r.member_id for r in rows}


class TestRallies:
    def test_everyone_usually_within_the_minutes_gets_it_and_only_a_count_comes_back(
        self, api, db, site, crowd, coordinator, settings, clock
    ):
        _, coord = coordinator
        eta = etas(api, coord, site, clock)
        travel = sorted(e - settings.mobilization_s for m, e in eta.items())
        # A limit between two members' travel times (whole minutes).
        minutes = next(
            m for m in range(1, 30) if sum(t <= m * 60 for t in travel) not in (0, len(travel))
        )
        expected = {m for m, e in eta.items() if e - settings.mobilization_s <= minutes * 60}
        res = rally(api, coord, body_for(site, clock, minutes), key="r1")
        assert res.status_code == 201, res.text
        doc = res.json()
        assert set(doc) == {"id", "sent_count", "created_at"}
        assert doc["sent_count"] == len(expected)
        assert recipients(db, doc["id"]) == expected
        [payload] = {
            str(d.payload["text"])
            for d in db.scalars(select(Delivery).where(Delivery.alert_id == uuid.UUID(doc["id"])))
        }
        assert payload.endswith("Thank you all")

    def test_idempotent_by_key(self, api, db, site, crowd, coordinator, clock):
        _, coord = coordinator
        body = body_for(site, clock, 30)
        first = rally(api, coord, body, key="same")
        assert first.status_code == 201
        n = len(db.scalars(select(Delivery)).all())
        again = rally(api, coord, body, key="same")
        assert again.status_code == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert len(db.scalars(select(Delivery)).all()) == n
        other = rally(api, coord, {**body, "text": "something else"}, key="same")
        assert other.status_code == 422
        assert other.json()["error"] == "RallyKeyReused"

    def test_everyone_adds_members_without_the_responder_role(
        self, api, db, site, crowd, coordinator, place, clock
    ):
        _, coord = coordinator
        plain, _ = place(site, site.nodes_by_time()[3], roles=())
        responders_only = rally(api, coord, body_for(site, clock, 30), key="a").json()
        assert plain.id not in recipients(db, responders_only["id"])
        everyone = rally(api, coord, body_for(site, clock, 30, everyone=True), key="b").json()
        assert plain.id in recipients(db, everyone["id"])
        assert everyone["sent_count"] == responders_only["sent_count"] + 1

    def test_snoozed_and_unavailable_members_are_left_out(
        self, api, db, site, crowd, coordinator, clock
    ):
        _, coord = coordinator
        (snoozer, s_token), (away, a_token) = crowd[0], crowd[1]
        until = (clock.now() + timedelta(hours=1)).isoformat()
        api.put("/v1/members/me/snooze", json={"until": until}, headers=auth(s_token))
        api.patch("/v1/members/me", json={"available": False}, headers=auth(a_token))
        body = body_for(site, clock, 30)
        body["at"] = clock.now().isoformat()
        doc = rally(api, coord, body, key="c").json()
        got = recipients(db, doc["id"])
        assert snoozer.id not in got
        assert away.id not in got
        assert crowd[2][0].id in got

    def test_who_may_and_bad_input(self, api, db, site, crowd, coordinator, clock):
        _, coord = coordinator
        _, member = crowd[0]
        body = body_for(site, clock, 30)
        assert rally(api, member, body, key="x").status_code == 403
        assert api.post("/v1/rallies", json=body).status_code == 401
        assert rally(api, coord, body).status_code == 422  # no Idempotency-Key
        far = {**body, "location": {"type": "Point", "coordinates": [0.0, 0.0]}}
        for bad in (
            far,
            {**body, "minutes": 0},
            {**body, "minutes": 121},
            {**body, "text": ""},
            {**body, "at": "2026-11-24T10:00:00"},
            {**body, "who": "x"},
        ):
            assert rally(api, coord, bad, key=uuid.uuid4().hex).status_code == 422, bad
        assert db.scalars(select(Rally)).all() == []
        assert db.scalars(select(Delivery)).all() == []

    def test_rallies_and_their_messages_expire_with_the_retention(
        self, api, db, site, crowd, coordinator, settings, clock
    ):
        _, coord = coordinator
        doc = rally(api, coord, body_for(site, clock, 30), key="old").json()
        assert recipients(db, doc["id"])
        later = clock.now() + timedelta(days=settings.alert_retention_days, seconds=1)
        assert run_purge(db, settings, now=later, dry_run=True)[3].startswith(
            "would remove: 1 rallies (with their notices)"
        )
        assert recipients(db, doc["id"])  # a dry run removes nothing
        assert run_purge(db, settings, now=later, dry_run=False)[3].startswith(
            "removed: 1 rallies (with their notices)"
        )
        assert recipients(db, doc["id"]) == set()
        assert db.get(Rally, uuid.UUID(doc["id"])) is None
