"""Buddies first: a personal alert's first wave starts with the requester's group and contact."""

# ruff: noqa: F811  (pytest fixtures imported from other test modules, used as arguments)
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.alerts.models import AlertResponder
from tests.alerts.conftest import place, site, walk_nx  # noqa: F401  (fixtures)
from tests.alerts.helpers import post_alert
from tests.api.conftest import coordinator, make_member  # noqa: F401  (fixtures)
from tests.api.factories import auth
from tests.groups.fixtures_texts import api, clock, make_group  # noqa: F401  (fixtures)


def rows(db: Any, alert_id: str) -> dict[uuid.UUID, AlertResponder]:
    stmt = (
        select(AlertResponder)
        .where(AlertResponder.alert_id == uuid.UUID(alert_id))
        .execution_options(populate_existing=True)
    )
    return {r.member_id: r for r in db.scalars(stmt)}


def wave_one(db: Any, alert_id: str) -> list[uuid.UUID]:
    """Members of the first wave, in ranking order."""
    first = [r for r in rows(db, alert_id).values() if r.wave == 1]
    return [r.member_id for r in sorted(first, key=lambda r: r.position)]


def raise_alert(client: TestClient, token: str, site: Any, kind: str = "personal") -> str:
    body = {"location": site.point(), "kind": kind, "needed": 1}
    res = post_alert(client, token, body, key=uuid.uuid4().hex)
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def app_client(settings, graphs, engine, session_factory, clock) -> TestClient:  # type: ignore[no-untyped-def]
    from api.main import create_app

    app = create_app(
        settings, engine=engine, session_factory=session_factory, graphs=graphs, clock=clock
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def world(site, place, make_member, make_group) -> dict[str, Any]:
    """Four responders near the site, a requester and its buddy farther away (no role).

    Without groups the first wave of a personal alert (needed 1) is 3 people: the nearest
    responders.
    """
    nodes = site.nodes_by_time()
    strangers = [place(site, n) for n in nodes[5:45:10]]
    buddy, buddy_token = place(site, nodes[400], roles=())
    requester, requester_token = make_member(roles=())
    group = make_group([requester, buddy])
    return {
        "nodes": nodes,
        "strangers": strangers,
        "buddy": buddy,
        "buddy_token": buddy_token,
        "requester": requester,
        "token": requester_token,
        "group": group,
    }


class TestBuddiesFirst:
    def test_a_buddy_farther_than_a_stranger_is_in_the_first_wave_ahead_of_it(
        self, api, db, site, world, settings
    ):
        alert_id = raise_alert(api, world["token"], site)
        ranked = rows(db, alert_id)
        first = wave_one(db, alert_id)
        buddy = world["buddy"].id
        assert first[0] == buddy
        assert len(first) == 3  # max(3, one buddy)
        left_out = [r for r in ranked.values() if r.wave is None]
        # A stranger nearer than the buddy waits in the reserve; the buddy is within reach.
        assert left_out
        assert min(r.eta_s for r in left_out) < ranked[buddy].eta_s <= settings.max_eta_s
        assert all(ranked[m].state == "notified" for m in first)
        # The rest of the wave is the strangers by ETA, as without groups.
        strangers = sorted((r for m, r in ranked.items() if m != buddy), key=lambda r: r.eta_s)
        assert first[1:] == [r.member_id for r in strangers[:2]]

    def test_the_point_contact_too_and_the_wave_grows_to_hold_every_buddy(
        self, api, db, site, world, place, make_group
    ):
        nodes = world["nodes"]
        more = [place(site, n, roles=())[0] for n in nodes[300:360:20]]
        contact, _ = place(site, nodes[350], roles=("defense",))
        group = make_group([world["requester"], *more], point_contact=contact)
        # A newer group of the requester: the one buddies first uses.
        group.published_at = world["group"].published_at + timedelta(hours=1)
        db.commit()
        alert_id = raise_alert(api, world["token"], site)
        first = wave_one(db, alert_id)
        assert set(first) == {m.id for m in more} | {contact.id}
        assert len(first) == 4 > 3
        view = api.get(f"/v1/alerts/{alert_id}", headers=auth(world["token"])).json()
        assert view["notified_count"] == 4

    def test_a_buddy_beyond_max_eta_is_not_put_first(
        self, api, settings, graphs, engine, session_factory, clock, db, site, world
    ):
        eta = rows(db, raise_alert(api, world["token"], site))[world["buddy"].id].eta_s
        # The same people, with ERN_MAX_ETA_S just short of the buddy's ETA.
        tight = settings.model_copy(update={"max_eta_s": eta - 1.0})
        client = app_client(tight, graphs, engine, session_factory, clock)
        alert_id = raise_alert(client, world["token"], site)
        assert world["buddy"].id not in rows(db, alert_id)  # no role: only ranked as a buddy
        assert len(wave_one(db, alert_id)) == 3

    def test_snoozed_or_unavailable_buddies_are_not_put_first(self, api, db, site, world, clock):
        until = (clock.now() + timedelta(hours=1)).isoformat()
        res = api.put(
            "/v1/members/me/snooze", json={"until": until}, headers=auth(world["buddy_token"])
        )
        assert res.status_code == 200, res.text
        alert_id = raise_alert(api, world["token"], site)
        assert world["buddy"].id not in rows(db, alert_id)
        assert len(wave_one(db, alert_id)) == 3
        api.delete("/v1/members/me/snooze", headers=auth(world["buddy_token"]))
        api.patch("/v1/members/me", json={"available": False}, headers=auth(world["buddy_token"]))
        alert_id = raise_alert(api, world["token"], site)
        assert world["buddy"].id not in rows(db, alert_id)

    def test_a_busy_buddy_is_not_put_first(self, api, db, site, world):
        # The buddy accepts the requester's first alert, still open: busy for the next one.
        first_alert = raise_alert(api, world["token"], site)
        assert wave_one(db, first_alert)[0] == world["buddy"].id
        res = api.post(
            f"/v1/alerts/{first_alert}/responses",
            json={"answer": "accept"},
            headers=auth(world["buddy_token"]),
        )
        assert res.status_code == 200, res.text
        alert_id = raise_alert(api, world["token"], site)
        assert world["buddy"].id not in rows(db, alert_id)
        # (the wave's size comes from the strangers' answers so far, as without groups)
        first = wave_one(db, alert_id)
        assert first and set(first) <= {m.id for m, _ in world["strangers"]}

    def test_other_kinds_and_requesters_without_a_group_are_unchanged(
        self, api, db, site, world, place, make_member, make_group
    ):
        nodes = world["nodes"]
        defenders = [place(site, n, roles=("defense",))[0] for n in nodes[8:48:10]]
        contact, _ = place(site, nodes[380], roles=("defense",))
        world["group"].point_contact_id = contact.id
        db.commit()
        # A defence alert by a group member: the nearest defenders, not its point contact.
        alert_id = raise_alert(api, world["token"], site, kind="defense")
        ranked = rows(db, alert_id)
        first = wave_one(db, alert_id)
        assert contact.id in ranked and contact.id not in first
        assert world["buddy"].id not in ranked
        nearest = sorted(ranked.values(), key=lambda r: r.eta_s)[: len(first)]
        assert set(first) == {r.member_id for r in nearest}
        # A personal alert by someone in no group: no buddy in front.
        _, loner = make_member(roles=())
        alert_id = raise_alert(api, loner, site)
        assert world["buddy"].id not in rows(db, alert_id)
        assert defenders  # (placed so that the defence alert has strangers to prefer)
