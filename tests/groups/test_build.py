"""POST /v1/groups/build: the contract answer, caps, planted commuters, nothing published."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.groups.models import BuddyGroup, GroupProposal
from api.groups.schemas import Proposal
from api.notify.models import Delivery
from tests.api.factories import auth
from tests.groups.conftest import WEEKDAYS, WEEKEND

CONTRACT_GROUP = {"members", "point_contact", "shared_minutes"}
CONTRACT_QUALITY = {"mean_shared_minutes", "random_baseline", "locality_baseline", "placed_share"}


def _planted(commuter: Any) -> dict[str, list[str]]:
    """Three sets of five on the same corridor: weekday mornings, weekday evenings, weekends."""
    sets: dict[str, list[str]] = {}
    for name, days, hour in (
        ("morning", WEEKDAYS, 8),
        ("evening", WEEKDAYS, 18),
        ("weekend", WEEKEND, 8),
    ):
        sets[name] = []
        for i in range(5):
            start = f"{hour:02d}:{(i % 3) * 5:02d}"
            end = f"{hour:02d}:{30 + (i % 3) * 5:02d}"
            member, _ = commuter(days, start, end)
            sets[name].append(str(member.id))
    return sets


def _group_of(answer: dict[str, Any], member_id: str) -> int | None:
    for i, group in enumerate(answer["groups"]):
        if member_id in group["members"]:
            return i
    return None


@pytest.fixture
def planted(commuter: Any, background: Any) -> dict[str, list[str]]:
    return _planted(commuter)


class TestBuild:
    def test_answer_has_the_contract_shape_and_respects_the_caps(
        self, client: TestClient, coordinator: Any, planted: dict[str, list[str]]
    ) -> None:
        r = client.post("/v1/groups/build", json={}, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text
        body = r.json()
        assert {"proposal_id", "groups", "unplaced", "quality"} <= set(body)
        assert set(body["quality"]) >= CONTRACT_QUALITY
        Proposal.model_validate(body)
        assert body["groups"], body
        for group in body["groups"]:
            assert set(group) == CONTRACT_GROUP
            assert 1 <= len(group["members"]) <= 10
        placed = [m for g in body["groups"] for m in g["members"]]
        assert len(placed) == len(set(placed))
        assert set(placed).isdisjoint(body["unplaced"])
        assert len(body["contact_eta_s"]) == len(body["groups"])
        q = body["quality"]
        assert q["placed_share"] == pytest.approx(
            len(placed) / (len(placed) + len(body["unplaced"])), abs=1e-3
        )
        assert sum(q["size_histogram"].values()) == len(body["groups"])
        assert set(body["timings_s"]) >= {"map_matching_s", "similarity_s", "partition_s"}

    def test_smaller_caps_are_respected(
        self, client: TestClient, coordinator: Any, planted: dict[str, list[str]]
    ) -> None:
        body = {"max_size": 4, "min_size": 2}
        r = client.post("/v1/groups/build", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text
        sizes = [len(g["members"]) for g in r.json()["groups"]]
        assert sizes and max(sizes) <= 4

    def test_planted_sets_are_together_and_apart_by_hours_and_days(
        self, client: TestClient, coordinator: Any, planted: dict[str, list[str]]
    ) -> None:
        r = client.post("/v1/groups/build", json={"mode": "walk"}, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text
        answer = r.json()
        where = {}
        for name, ids in planted.items():
            groups = {_group_of(answer, m) for m in ids}
            assert len(groups) == 1 and None not in groups, (name, groups)
            where[name] = groups.pop()
        assert len(set(where.values())) == 3, where
        q = answer["quality"]
        assert q["mean_shared_minutes"] > q["random_baseline"]
        assert q["mean_shared_minutes"] > q["locality_baseline"]

    def test_nothing_changes_before_publish(
        self, client: TestClient, db: Session, coordinator: Any, planted: dict[str, list[str]]
    ) -> None:
        before = db.scalar(select(func.count()).select_from(Delivery))
        r = client.post("/v1/groups/build", json={}, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text
        assert db.scalar(select(func.count()).select_from(BuddyGroup)) == 0
        assert db.scalar(select(func.count()).select_from(Delivery)) == before
        stored = db.get(GroupProposal, r.json()["proposal_id"])
        assert stored is not None and stored.published_at is None
        assert stored.answer["groups"] == r.json()["groups"]
        listed = client.get("/v1/groups", headers=auth(coordinator[1]))
        assert listed.status_code == 200 and listed.json()["items"] == []


class TestBuildErrors:
    def test_min_size_above_max_size_names_the_field(
        self, client: TestClient, coordinator: Any
    ) -> None:
        body = {"max_size": 4, "min_size": 5}
        r = client.post("/v1/groups/build", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 422
        assert r.json()["detail"].startswith("min_size:")

    @pytest.mark.parametrize(
        "body",
        [{"max_size": 11}, {"max_size": 1}, {"mode": "boat"}, {"keep": "yes"}, {"size": 3}],
    )
    def test_bad_bodies_are_422(
        self, client: TestClient, coordinator: Any, body: dict[str, Any]
    ) -> None:
        r = client.post("/v1/groups/build", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 422, r.text

    def test_a_mode_without_a_graph_is_422_with_the_reason(
        self,
        settings: Any,
        graphs: GraphStore,
        engine: Any,
        session_factory: Any,
        coordinator: Any,
    ) -> None:
        from api.main import create_app

        without_walk = GraphStore(
            by_mode={m: g for m, g in graphs.by_mode.items() if m != "walk"},
            problems={"walk": "not compiled"},
        )
        app = create_app(
            settings, engine=engine, session_factory=session_factory, graphs=without_walk
        )
        client = TestClient(app, raise_server_exceptions=False)
        r = client.post("/v1/groups/build", json={}, headers=auth(coordinator[1]))
        assert r.status_code == 422
        assert "mode" in r.json()["detail"] and "not compiled" in r.json()["detail"]

    @pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
    def test_other_methods_on_build_are_405_allowing_post(
        self, client: TestClient, coordinator: Any, method: str
    ) -> None:
        r = client.request(method, "/v1/groups/build", headers=auth(coordinator[1]))
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == "POST"


class TestBuildDefaults:
    def test_the_default_min_size_shrinks_to_a_smaller_max_size(
        self, client: TestClient, coordinator: Any, commuter: Any
    ) -> None:
        for _ in range(3):
            commuter(WEEKDAYS, "08:00", "08:30")
        r = client.post("/v1/groups/build", json={"max_size": 2}, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text
        assert r.json()["min_size"] == 2
        assert max(len(g["members"]) for g in r.json()["groups"]) <= 2


class TestUnmatched:
    def test_a_route_on_no_street_is_reported_with_its_reason(
        self, client: TestClient, coordinator: Any, commuter: Any, corridor: Any
    ) -> None:
        for _ in range(3):
            commuter(WEEKDAYS, "08:00", "08:30")
        lon, lat = float(corridor.lon[5]), float(corridor.lat[5])
        stub = {
            "path": {"type": "LineString", "coordinates": [[lon, lat], [lon + 0.00001, lat]]},
            "days": WEEKDAYS,
            "start": "08:00",
            "end": "08:30",
        }
        member, token = commuter(WEEKDAYS, "08:00", "08:30")
        routes = client.get("/v1/members/me", headers=auth(token)).json()["routes"]
        for route in routes:
            route.pop("id")
        r = client.patch("/v1/members/me", json={"routes": [stub, *routes]}, headers=auth(token))
        assert r.status_code == 200, r.text
        route_id = next(x["id"] for x in r.json()["routes"] if len(x["path"]["coordinates"]) == 2)
        answer = client.post("/v1/groups/build", json={}, headers=auth(coordinator[1])).json()
        unmatched = {u["route_id"]: u for u in answer["unmatched"]}
        assert route_id in unmatched, answer["unmatched"]
        assert unmatched[route_id]["member_id"] == str(member.id)
        assert "covers no street" in unmatched[route_id]["reason"]
        # Its other route still places it.
        assert any(str(member.id) in g["members"] for g in answer["groups"])
