"""Members whose home zone, zones or routes no loaded graph can rank are 422, nothing stored."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.graphs import GraphStore, ModeGraph
from api.members.models import ApiToken, AuditEvent, Member, MemberRoute, MemberZone
from api.members.schemas import MemberRead
from api.settings import Settings
from geo.csr import StreetGraph
from geo.snap import Snapper
from tests.api.conftest import MakeMember
from tests.api.factories import (
    EXAMPLE_MEMBER,
    HELSINKI_LAT,
    HELSINKI_LON,
    auth,
    full_member_body,
    line,
    member_body,
    square,
    unique_handle,
)

Caller = tuple[Member, str]
M_PER_DEG_LAT = 111_320.0
# About 55 km east of the Helsinki extract: no Helsinki street node within any snap limit.
FAR_LON, FAR_LAT = HELSINKI_LON + 1.0, HELSINKI_LAT


def counts(db: Session) -> tuple[int, ...]:
    db.expire_all()
    return tuple(
        db.scalar(select(func.count()).select_from(m)) or 0
        for m in (Member, MemberZone, MemberRoute, ApiToken, AuditEvent)
    )


def east_of(graph: StreetGraph, metres: float) -> tuple[float, float]:
    """A point ``metres`` due east of the graph's easternmost node (no node is nearer than that)."""
    east = int(np.argmax(graph.lon))
    lat = float(graph.lat[east])
    return float(graph.lon[east]) + metres / (M_PER_DEG_LAT * math.cos(math.radians(lat))), lat


def far_grid(mode: str, lon: float, lat: float) -> ModeGraph:
    """A small hand-built street grid (4 x 4 nodes, 100 m apart) around (lon, lat)."""
    dlat = 100.0 / M_PER_DEG_LAT
    dlon = 100.0 / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    n = 4
    lons = [lon + (i % n - 1.5) * dlon for i in range(n * n)]
    lats = [lat + (i // n - 1.5) * dlat for i in range(n * n)]
    u, v = [], []
    for i in range(n * n):
        for j in (i + 1 if i % n < n - 1 else None, i + n if i + n < n * n else None):
            if j is not None:
                u += [i, j]
                v += [j, i]
    graph = StreetGraph.from_edges(mode, u, v, [60.0] * len(u), lons, lats)
    return ModeGraph(graph=graph, snapper=Snapper(graph))


@pytest.fixture
def client_on(settings: Settings, engine: Any, session_factory: Any):  # type: ignore[no-untyped-def]
    """client_on(store): a client of an app whose graphs are ``store``."""
    from api.main import create_app

    def make(store: GraphStore) -> TestClient:
        app = create_app(settings, engine=engine, session_factory=session_factory, graphs=store)
        return TestClient(app, raise_server_exceptions=False)

    return make


class TestCreate:
    def test_the_heidelberg_example_on_helsinki_graphs_is_422_and_nothing_is_stored(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        body = copy.deepcopy(EXAMPLE_MEMBER)
        body["handle"] = unique_handle("rosa")
        before = counts(db)
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 422, r.text
        error = r.json()
        assert error["error"] == "OutsideServiceArea"
        assert error["detail"].startswith("home_zone: outside the service area")
        assert "300 m" in error["detail"] and "walk" in error["detail"]
        assert counts(db) == before

    @pytest.mark.parametrize(
        ("where", "label"),
        [("home_zone", "home_zone"), ("zone", "zones.0.area"), ("route", "routes.1.path")],
    )
    def test_each_geometry_outside_is_named(
        self, client: TestClient, coordinator: Caller, db: Session, where: str, label: str
    ) -> None:
        body = full_member_body(unique_handle())
        if where == "home_zone":
            body["home_zone"] = square(FAR_LON, FAR_LAT, 300.0)
        elif where == "zone":
            body["zones"][0]["area"] = square(FAR_LON, FAR_LAT, 250.0)
        else:
            body["routes"][1]["path"] = line((FAR_LON, FAR_LAT), (FAR_LON + 0.01, FAR_LAT))
        before = counts(db)
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"{label}: outside the service area"), r.text
        assert counts(db) == before

    def test_the_snap_limit_is_the_border(
        self, client: TestClient, coordinator: Caller, graphs: GraphStore, settings: Settings
    ) -> None:
        """A zone with no node inside, its centre 250 m from the nearest node: in; 350 m: out."""
        walk = graphs.get("walk")
        inside = east_of(walk.graph, settings.max_snap_m - 50)
        outside = east_of(walk.graph, settings.max_snap_m + 50)
        # The premise: no node nearer than that (the zone is a 200 m square around the point).
        for (lon, lat), limit_ok in ((inside, True), (outside, False)):
            _, dist = walk.snapper.snap(lon, lat)
            assert (float(dist[0]) <= settings.max_snap_m) is limit_ok
        ok = client.post(
            "/v1/members",
            json=member_body(home_zone=square(*inside, 200.0)),
            headers=auth(coordinator[1]),
        )
        assert ok.status_code == 201, ok.text
        refused = client.post(
            "/v1/members",
            json=member_body(home_zone=square(*outside, 200.0)),
            headers=auth(coordinator[1]),
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"].startswith("home_zone: outside")

    def test_a_route_that_leaves_the_area_in_part_is_kept(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        """Its part inside gives anchors; only a route with no point near a node is refused."""
        body = member_body(
            routes=[
                {
                    "path": line((HELSINKI_LON, HELSINKI_LAT), (FAR_LON, FAR_LAT)),
                    "days": ["mon"],
                    "start": "08:00",
                    "end": "09:00",
                }
            ]
        )
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text

    def test_without_any_graph_every_place_is_accepted(
        self, client_on: Any, coordinator: Caller
    ) -> None:
        """ERN_ALLOW_NO_GRAPHS: ranking by straight line works anywhere, so nothing is outside."""
        body = member_body(home_zone=square(FAR_LON, FAR_LAT, 300.0))
        r = client_on(GraphStore()).post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text

    def test_the_members_own_mode_graph_decides(
        self, client_on: Any, coordinator: Caller, graphs: GraphStore
    ) -> None:
        """Ranking uses the member's mode's graph; a mode without one: any loaded graph."""
        store = GraphStore(
            by_mode={"walk": graphs.get("walk"), "drive": far_grid("drive", FAR_LON, FAR_LAT)}
        )
        client = client_on(store)
        helsinki = square(HELSINKI_LON, HELSINKI_LAT, 300.0)
        far = square(FAR_LON, FAR_LAT, 250.0)
        cases = [("walk", helsinki, 201), ("drive", helsinki, 422), ("drive", far, 201)]
        cases += [("bike", helsinki, 201), ("bike", far, 201), ("walk", far, 422)]
        for mode, zone, status in cases:
            body = member_body(mode=mode, home_zone=zone)
            r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
            assert r.status_code == status, (mode, r.text)


class TestUpdate:
    def test_moving_the_home_zone_outside_is_422_and_changes_nothing(
        self, client: TestClient, responder: Caller
    ) -> None:
        before = client.get("/v1/members/me", headers=auth(responder[1])).json()
        r = client.patch(
            "/v1/members/me",
            json={"home_zone": square(FAR_LON, FAR_LAT, 300.0), "available": False},
            headers=auth(responder[1]),
        )
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("home_zone: outside")
        after = client.get("/v1/members/me", headers=auth(responder[1])).json()
        assert after == before

    def test_a_coordinator_adding_a_route_outside_is_422(
        self, client: TestClient, coordinator: Caller, responder: Caller
    ) -> None:
        route = {
            "path": line((FAR_LON, FAR_LAT), (FAR_LON, FAR_LAT + 0.01)),
            "days": ["tue"],
            "start": "07:00",
            "end": "07:30",
        }
        r = client.patch(
            f"/v1/members/{responder[0].id}",
            json={"routes": [route]},
            headers=auth(coordinator[1]),
        )
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("routes.0.path: outside")
        me = MemberRead.model_validate(
            client.get("/v1/members/me", headers=auth(responder[1])).json()
        )
        assert me.routes == []

    def test_a_change_of_mode_checks_the_geometry_kept(
        self, client_on: Any, make_member: MakeMember, graphs: GraphStore
    ) -> None:
        store = GraphStore(
            by_mode={"walk": graphs.get("walk"), "drive": far_grid("drive", FAR_LON, FAR_LAT)}
        )
        client = client_on(store)
        _, token = make_member(roles=("responder",))
        r = client.patch("/v1/members/me", json={"mode": "drive"}, headers=auth(token))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("home_zone (stored): outside"), r.text
        assert client.get("/v1/members/me", headers=auth(token)).json()["mode"] == "walk"
        # With a new home zone on the drive graph in the same change, the mode may change.
        moved = {"mode": "drive", "home_zone": square(FAR_LON, FAR_LAT, 250.0)}
        r = client.patch("/v1/members/me", json=moved, headers=auth(token))
        assert r.status_code == 200, r.text
        assert r.json()["mode"] == "drive"

    def test_a_patch_without_geometry_leaves_a_stored_place_alone(
        self, client_on: Any, make_member: MakeMember, graphs: GraphStore
    ) -> None:
        """Members stored before the rule (or before a graph changed) can still edit the rest."""
        store = GraphStore(by_mode={"walk": far_grid("walk", FAR_LON, FAR_LAT)})
        _, token = make_member(roles=("responder",))  # in Helsinki, made with Helsinki graphs
        r = client_on(store).patch("/v1/members/me", json={"available": False}, headers=auth(token))
        assert r.status_code == 200, r.text
