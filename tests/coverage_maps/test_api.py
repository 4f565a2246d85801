"""GET /v1/coverage, /profile, /recruit, /public on PostGIS with members on Helsinki graphs."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from api.coverage.schemas import (
    CoverageCollection,
    ProfileRead,
    PublicCollection,
    RecruitCollection,
)
from api.graphs import GraphStore
from tests.presence.conftest import AddMember, node_box

AT = "2026-12-01T12:30:00+02:00"  # a Tuesday noon, Helsinki


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def seeded(db: Session, graphs: GraphStore, add_member: AddMember) -> list[Any]:
    """40 walking and 10 driving responders at home on random walk/drive nodes; 2 not available."""
    rng = np.random.default_rng(12)
    members = []
    walk = graphs.by_mode["walk"].graph
    for node in rng.choice(walk.n_nodes, 40, replace=False).tolist():
        members.append(add_member(node_box(walk, node), mode="walk"))
    if "drive" in graphs.by_mode:
        drive = graphs.by_mode["drive"].graph
        for node in rng.choice(drive.n_nodes, 10, replace=False).tolist():
            members.append(add_member(node_box(drive, node), mode="drive"))
    db.commit()
    return members


def _coordinates(body: Any) -> list[list[float]]:
    out: list[list[float]] = []

    def walk(x: Any) -> None:
        if isinstance(x, list) and len(x) == 2 and all(isinstance(v, float) for v in x):
            out.append(x)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(body)
    return out


class TestCoverage:
    def test_coordinator_gets_cells_with_contract_properties(
        self, client: Any, coordinator: Any, seeded: list[Any]
    ) -> None:
        r = client.get("/v1/coverage", params={"at": AT}, headers=_auth(coordinator[1]))
        assert r.status_code == 200, r.text
        body = r.json()
        CoverageCollection.model_validate(body)
        assert body["type"] == "FeatureCollection"
        assert body["ern"]["mode"] == "all" and body["ern"]["k"] == 3 and body["ern"]["res"] == 9
        assert body["ern"]["minutes"] == 5 and "computed_at" in body["ern"]
        assert body["features"], "no cells"
        for f in body["features"]:
            assert f["geometry"]["type"] == "Polygon"
            assert set(f["properties"]) == {
                "h3",
                "t1_s",
                "tk_s",
                "responders_within",
                "p_covered",
                "street_m",
                "gap",
            }
            rw = f["properties"]["responders_within"]
            assert rw == "<3" or (isinstance(rw, int) and rw >= 3)
            for t in ("t1_s", "tk_s"):
                assert f["properties"][t] is None or f["properties"][t] % 60 == 0
        assert any(f["properties"]["gap"] for f in body["features"])

    def test_second_answer_is_cached_and_a_presence_change_invalidates_it(
        self,
        client: Any,
        coordinator: Any,
        seeded: list[Any],
        db: Session,
        graphs: GraphStore,
        add_member: AddMember,
    ) -> None:
        params = {"at": AT, "mode": "walk"}
        first = client.get("/v1/coverage", params=params, headers=_auth(coordinator[1])).json()
        second = client.get("/v1/coverage", params=params, headers=_auth(coordinator[1])).json()
        assert not first["ern"]["cached"] and second["ern"]["cached"]
        walk = graphs.by_mode["walk"].graph
        add_member(node_box(walk, 0), mode="walk")
        db.commit()
        third = client.get("/v1/coverage", params=params, headers=_auth(coordinator[1])).json()
        assert not third["ern"]["cached"]

    @pytest.mark.parametrize(
        "params",
        [
            {"mode": "boat"},
            {"res": 6},
            {"res": 11},
            {"k": 6},
            {"k": 0},
            {"minutes": 0},
            {"minutes": -1},
            {"at": "yesterday"},
        ],
    )
    def test_bad_parameters_are_422_with_a_reason(
        self, client: Any, coordinator: Any, params: dict[str, Any]
    ) -> None:
        r = client.get("/v1/coverage", params=params, headers=_auth(coordinator[1]))
        assert r.status_code == 422
        assert r.json()["detail"]

    def test_member_is_403_and_anonymous_401(self, client: Any, responder: Any) -> None:
        for path in ("/v1/coverage", "/v1/coverage/profile", "/v1/coverage/recruit"):
            assert client.get(path, headers=_auth(responder[1])).status_code == 403
            assert client.get(path).status_code == 401

    def test_mode_without_graph_is_409(
        self, client: Any, coordinator: Any, graphs: GraphStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delitem(graphs.by_mode, "bike")
        r = client.get("/v1/coverage", params={"mode": "bike"}, headers=_auth(coordinator[1]))
        assert r.status_code == 409
        assert "bike" in r.json()["detail"]


class TestPrivacy:
    def test_no_member_id_handle_or_geometry_in_any_answer(
        self, client: Any, coordinator: Any, seeded: list[Any]
    ) -> None:
        texts = [
            client.get(p, params=q, headers=_auth(coordinator[1])).text
            for p, q in [
                ("/v1/coverage", {"at": AT}),
                ("/v1/coverage", {"at": AT, "res": 10, "k": 1}),
                ("/v1/coverage/profile", {"mode": "walk"}),
                ("/v1/coverage/recruit", {"n": 3, "mode": "walk"}),
                ("/v1/coverage/public", {"at": AT}),
            ]
        ]
        from geoalchemy2.shape import to_shape

        points = np.array([to_shape(m.home_zone).centroid.coords[0] for m in seeded])
        for text in texts:
            for m in seeded:
                assert str(m.id) not in text and m.handle not in text
            coords = np.array(_coordinates(json.loads(text)) or [[0.0, 0.0]])
            # no coordinate of an answer within 2 m of a member's home (0.5 m zone boxes)
            dx = (coords[:, None, 0] - points[None, :, 0]) * 111_320 * np.cos(np.radians(60.17))
            dy = (coords[:, None, 1] - points[None, :, 1]) * 111_320
            assert np.hypot(dx, dy).min() > 2.0

    def test_counts_below_k_anon_never_appear(
        self, client: Any, coordinator: Any, seeded: list[Any]
    ) -> None:
        body = client.get(
            "/v1/coverage", params={"at": AT, "res": 10, "k": 1}, headers=_auth(coordinator[1])
        ).json()
        values = [f["properties"]["responders_within"] for f in body["features"]]
        assert "<3" in values
        assert not any(isinstance(v, int) and v < 3 for v in values)

    def test_public_view_is_coarse_with_h3_and_gap_only(
        self, client: Any, responder: Any, seeded: list[Any]
    ) -> None:
        import h3

        r = client.get("/v1/coverage/public", params={"at": AT}, headers=_auth(responder[1]))
        assert r.status_code == 200, r.text
        body = r.json()
        PublicCollection.model_validate(body)
        assert body["features"]
        for f in body["features"]:
            assert set(f["properties"]) == {"h3", "gap"}
            assert f["properties"]["gap"] is True
            assert h3.get_resolution(f["properties"]["h3"]) <= 8
        assert set(body["ern"]) == {"res", "computed_at"}
        for res in (9, 10):
            r = client.get("/v1/coverage/public", params={"res": res}, headers=_auth(responder[1]))
            assert r.status_code == 422


class TestProfile:
    def test_168_hours_as_json_and_csv(
        self, client: Any, coordinator: Any, seeded: list[Any]
    ) -> None:
        r = client.get(
            "/v1/coverage/profile", params={"mode": "walk"}, headers=_auth(coordinator[1])
        )
        assert r.status_code == 200, r.text
        body = ProfileRead.model_validate(r.json())
        assert [h.hour for h in body.hours] == list(range(168))
        assert all(0 <= h.covered_share <= 1 for h in body.hours)
        r = client.get(
            "/v1/coverage/profile",
            params={"mode": "walk"},
            headers={**_auth(coordinator[1]), "Accept": "text/csv"},
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 168 and rows[0]["day"] == "mon"
        assert float(rows[12]["covered_share"]) == body.hours[12].covered_share


class TestRecruit:
    def test_ranked_points_with_gain(
        self, client: Any, coordinator: Any, seeded: list[Any]
    ) -> None:
        r = client.get(
            "/v1/coverage/recruit",
            params={"n": 4, "hours": "evenings", "mode": "walk", "k": 1},
            headers=_auth(coordinator[1]),
        )
        assert r.status_code == 200, r.text
        body = RecruitCollection.model_validate(r.json())
        assert [f.properties.rank for f in body.features] == list(range(1, len(body.features) + 1))
        assert body.features
        gains = [f.properties.gain_m for f in body.features]
        assert all(g > 0 for g in gains) and gains == sorted(gains, reverse=True)
        raw = r.json()["features"][0]
        assert set(raw["properties"]) >= {"rank", "gain_m", "h3"}
        assert raw["geometry"]["type"] == "Point"

    @pytest.mark.parametrize("hours", ["x", "170", "5-3", ""])
    def test_bad_hours_are_422(self, client: Any, coordinator: Any, hours: str) -> None:
        r = client.get(
            "/v1/coverage/recruit", params={"hours": hours}, headers=_auth(coordinator[1])
        )
        assert r.status_code == 422
        assert json.loads(r.text)["detail"]


class TestRecruitByAlerts:
    def test_past_alerts_in_a_gap_pull_the_first_pick_there(
        self, client: Any, coordinator: Any, seeded: list[Any], db: Session
    ) -> None:
        import uuid
        from datetime import UTC, datetime, timedelta

        import h3
        from geoalchemy2.shape import from_shape
        from shapely.geometry import Point

        from api.alerts.models import Alert

        headers = _auth(coordinator[1])
        base = {"n": 1, "hours": "evenings", "mode": "walk", "k": 1}
        street = client.get("/v1/coverage/recruit", params=base, headers=headers).json()
        assert street["ern"]["weight"] == "street"
        # the gap cell with the most street that the street-only first pick does not reach
        cells = client.get(
            "/v1/coverage", params={"mode": "walk", "k": 1, "at": "2026-12-01T20:30:00+02:00"},
            headers=headers,
        ).json()["features"]  # fmt: skip
        first = street["features"][0]["properties"]["h3"]
        gaps = [
            f["properties"]
            for f in cells
            if f["properties"]["gap"] and h3.grid_distance(f["properties"]["h3"], first) > 4
        ]
        target = max(gaps, key=lambda p: p["street_m"])["h3"]
        lat, lon = h3.cell_to_latlng(target)
        when = datetime.now(UTC) - timedelta(days=3)
        for i in range(60):
            db.add(
                Alert(
                    id=uuid.uuid4(),
                    requester_id=coordinator[0].id,
                    idempotency_key=f"rec-{i}",
                    request_hash=b"x",
                    kind="personal",
                    needed=1,
                    location=from_shape(Point(lon, lat), srid=4326),
                    presence_at=when,
                    exercise=False,
                    created_at=when,
                )
            )
        db.commit()
        unweighted = client.get("/v1/coverage/recruit", params=base, headers=headers).json()
        assert unweighted["features"][0]["properties"]["h3"] == first  # alerts not asked for
        r = client.get("/v1/coverage/recruit", params={**base, "weight": "alerts"}, headers=headers)
        assert r.status_code == 200, r.text
        body = RecruitCollection.model_validate(r.json())
        assert body.ern.weight == "alerts"
        pick = body.features[0].properties
        assert h3.grid_distance(pick.h3, target) <= 2, (pick.h3, target)
        assert pick.gain_m > street["features"][0]["properties"]["gain_m"]

    def test_unknown_weight_is_422(self, client: Any, coordinator: Any) -> None:
        r = client.get(
            "/v1/coverage/recruit", params={"weight": "crime"}, headers=_auth(coordinator[1])
        )
        assert r.status_code == 422


class TestProfileAlerts:
    def test_past_alerts_count_at_their_hour_without_exercises_or_old_ones(
        self, client: Any, coordinator: Any, seeded: list[Any], db: Session, graphs: GraphStore
    ) -> None:
        import uuid
        from datetime import UTC, datetime, timedelta
        from zoneinfo import ZoneInfo

        from geoalchemy2.shape import from_shape
        from shapely.geometry import Point

        from api.alerts.models import Alert

        walk = graphs.by_mode["walk"].graph
        node = int(seeded[0].id.int % walk.n_nodes)
        now = datetime.now(UTC)
        # Tuesday 14:xx Helsinki time, within the last 90 days
        base = now - timedelta(days=7)
        local = base.astimezone(ZoneInfo("Europe/Helsinki"))
        hour = local.weekday() * 24 + local.hour
        for i, (when, exercise) in enumerate(
            [(base, False), (base, True), (now - timedelta(days=100), False)]
        ):
            db.add(
                Alert(
                    id=uuid.uuid4(),
                    requester_id=coordinator[0].id,
                    idempotency_key=f"cov-{i}",
                    request_hash=b"x",
                    kind="personal",
                    needed=1,
                    location=from_shape(
                        Point(float(walk.lon[node]), float(walk.lat[node])), srid=4326
                    ),
                    presence_at=when,
                    exercise=exercise,
                    created_at=when,
                )
            )
        db.commit()
        body = client.get(
            "/v1/coverage/profile", params={"mode": "walk"}, headers=_auth(coordinator[1])
        ).json()
        counts = {h["hour"]: h["alerts"] for h in body["hours"] if h["alerts"]}
        assert counts == {hour: 1}
        assert body["hours"][hour]["alerts_covered_share"] in (0.0, 1.0)


class TestSnoozed:
    def test_snoozed_responders_are_absent_until_their_snooze_ends(
        self, client: Any, coordinator: Any, db: Session, seeded: list[Any]
    ) -> None:
        from datetime import datetime, timedelta

        at = datetime.fromisoformat(AT)
        later = (at + timedelta(days=7)).isoformat()  # same hour of the week, snooze over
        headers = _auth(coordinator[1])
        before = client.get("/v1/coverage", params={"at": AT}, headers=headers).json()
        assert any(f["properties"]["t1_s"] is not None for f in before["features"])
        for member in seeded:
            member.snoozed_until = at + timedelta(hours=1)
        db.commit()
        snoozed = client.get("/v1/coverage", params={"at": AT}, headers=headers).json()
        assert all(f["properties"]["gap"] for f in snoozed["features"])
        assert all(f["properties"]["t1_s"] is None for f in snoozed["features"])
        after = client.get("/v1/coverage", params={"at": later}, headers=headers).json()
        assert [f["properties"] for f in after["features"]] == [
            f["properties"] for f in before["features"]
        ]
