"""PUT/DELETE /v1/members/me/location, and live locations in the ranking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import networkx as nx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.clock import ManualClock
from api.graphs import GraphStore
from api.presence import repository as repo
from api.presence.ranking import rank_members
from api.presence.router import router as presence_router
from api.presence.schemas import LocationRead
from api.settings import Settings
from tests.api.factories import auth

NOW = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)  # Tuesday 08:30 in Helsinki


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def live_app(app: FastAPI, clock: ManualClock) -> FastAPI:
    """The app with the presence router (until main.py includes it) and a manual clock."""
    paths = {getattr(r, "path", None) for r in app.routes}
    if "/v1/members/me/location" not in paths:
        app.include_router(presence_router)
    app.state.clock = clock
    return app


@pytest.fixture
def live_client(live_app: FastAPI) -> TestClient:
    return TestClient(live_app, raise_server_exceptions=False)


def _point(lon: float, lat: float) -> dict[str, object]:
    return {"location": {"type": "Point", "coordinates": [lon, lat]}}


class TestPutLocation:
    def test_put_stores_until_ttl(
        self, live_client, responder, db: Session, settings: Settings
    ) -> None:  # type: ignore[no-untyped-def]
        member, token = responder
        r = live_client.put(
            "/v1/members/me/location", json=_point(24.94, 60.17), headers=auth(token)
        )
        assert r.status_code == 200, r.text
        body = LocationRead.model_validate(r.json())
        assert body.expires_at == NOW + timedelta(seconds=settings.live_location_ttl_s)
        rows = repo.live_locations(db, at=NOW)
        assert [(row[0], row[1], row[2]) for row in rows] == [(member.id, 24.94, 60.17)]
        assert repo.live_locations(db, at=body.expires_at) == []

    def test_put_replaces(self, live_client, responder, db: Session) -> None:  # type: ignore[no-untyped-def]
        _, token = responder
        live_client.put("/v1/members/me/location", json=_point(24.94, 60.17), headers=auth(token))
        live_client.put("/v1/members/me/location", json=_point(24.95, 60.16), headers=auth(token))
        rows = repo.live_locations(db, at=NOW)
        assert [(row[1], row[2]) for row in rows] == [(24.95, 60.16)]

    def test_needs_a_token(self, live_client) -> None:  # type: ignore[no-untyped-def]
        r = live_client.put("/v1/members/me/location", json=_point(24.94, 60.17))
        assert r.status_code == 401
        assert r.json()["error"]

    def test_bad_point_is_422(self, live_client, responder) -> None:  # type: ignore[no-untyped-def]
        _, token = responder
        r = live_client.put(
            "/v1/members/me/location", json=_point(200.0, 60.17), headers=auth(token)
        )
        assert r.status_code == 422
        r = live_client.put(
            "/v1/members/me/location",
            json={"location": {"type": "Polygon", "coordinates": []}},
            headers=auth(token),
        )
        assert r.status_code == 422

    def test_delete_forgets(self, live_client, responder, db: Session) -> None:  # type: ignore[no-untyped-def]
        _, token = responder
        live_client.put("/v1/members/me/location", json=_point(24.94, 60.17), headers=auth(token))
        r = live_client.delete("/v1/members/me/location", headers=auth(token))
        assert r.status_code == 204
        assert repo.live_locations(db, at=NOW) == []
        again = live_client.delete("/v1/members/me/location", headers=auth(token))
        assert again.status_code == 204


class TestLiveInRanking:
    def test_live_location_beats_home_then_expires(
        self, live_client, make_member, db: Session, graphs: GraphStore, settings: Settings, clock
    ) -> None:  # type: ignore[no-untyped-def]
        g = graphs.get("walk").graph
        # Home about 700 m east of the alert; the live location is at the alert's node.
        target = int(((g.lon - 24.9384) ** 2 + (g.lat - 60.1699) ** 2).argmin())
        lon, lat = float(g.lon[target]), float(g.lat[target])
        member, token = make_member(lon=lon + 0.012, lat=lat)
        other, _ = make_member(lon=lon + 0.006, lat=lat)

        def rank(at: datetime):  # type: ignore[no-untyped-def]
            return rank_members(
                db,
                graphs,
                settings,
                lon=lon,
                lat=lat,
                at=at,
                roles=None,
                exclude=frozenset(),
                limit=None,
                max_eta_s=1e6,
            )

        before = rank(NOW)
        assert [c.member_id for c in before.candidates] == [other.id, member.id]
        r = live_client.put("/v1/members/me/location", json=_point(lon, lat), headers=auth(token))
        assert r.status_code == 200
        live = rank(NOW)
        assert [c.member_id for c in live.candidates] == [member.id, other.id]
        assert live.candidates[0].eta_s == pytest.approx(settings.mobilization_s, abs=0.5)
        # excluded or in another role set, a live member is not ranked from home either
        only_other = rank_members(
            db,
            graphs,
            settings,
            lon=lon,
            lat=lat,
            at=NOW,
            roles=None,
            exclude=frozenset({member.id}),
            limit=None,
            max_eta_s=1e6,
        )
        assert [c.member_id for c in only_other.candidates] == [other.id]
        expired = rank(NOW + timedelta(seconds=settings.live_location_ttl_s + 1))
        assert [c.member_id for c in expired.candidates] == [other.id, member.id]

    def test_live_eta_matches_networkx(
        self, live_client, make_member, db: Session, graphs: GraphStore, settings: Settings
    ) -> None:  # type: ignore[no-untyped-def]
        mg = graphs.get("walk")
        g = mg.graph
        target = int(((g.lon - 24.9384) ** 2 + (g.lat - 60.1699) ** 2).argmin())
        lon, lat = float(g.lon[target]), float(g.lat[target])
        member, token = make_member(lon=lon, lat=lat)
        live_lon, live_lat = lon + 0.0071, lat + 0.0033
        live_client.put(
            "/v1/members/me/location", json=_point(live_lon, live_lat), headers=auth(token)
        )
        ranking = rank_members(
            db,
            graphs,
            settings,
            lon=lon,
            lat=lat,
            at=NOW,
            roles=None,
            exclude=frozenset(),
            limit=1,
            max_eta_s=1e6,
        )
        node, snap_m = mg.snapper.snap(live_lon, live_lat)
        travel = nx.shortest_path_length(
            g.to_networkx(), int(node[0]), target, weight="travel_time_s"
        )
        expected = settings.mobilization_s + float(snap_m[0]) / settings.walk_speed_mps + travel
        assert ranking.candidates[0].member_id == member.id
        assert ranking.candidates[0].eta_s == pytest.approx(expected, abs=1e-2)
