"""GET /healthz: 200 with the schema at head, 503 with the reason when the schema is behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from api.database import head_revision, make_engine, make_session_factory
from api.health import Health
from api.main import create_app
from api.settings import Settings


@pytest.fixture
def empty_engine(database_url: str) -> Iterator[Engine]:
    """A database with no migrations applied."""
    name = f"ern_empty_{uuid.uuid4().hex[:8]}"
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(make_url(database_url).set(database=name).render_as_string(False))
    yield engine
    engine.dispose()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TestHealthz:
    def test_ready_service_reports_schema_at_head_and_its_graphs(self, client: TestClient) -> None:
        answer = client.get("/healthz")
        assert answer.status_code == 200
        body = Health.model_validate(answer.json())
        assert body.status == "ok" and body.database == "ok"
        assert body.schema_revision == body.schema_head == head_revision() is not None
        assert all(v.startswith("loaded") for v in body.graphs.values())

    def test_schema_behind_is_503_and_says_so(
        self, settings: Settings, graphs: Any, empty_engine: Engine
    ) -> None:
        app = create_app(
            settings,
            engine=empty_engine,
            session_factory=make_session_factory(empty_engine),
            graphs=graphs,
        )
        answer = TestClient(app).get("/healthz")
        assert answer.status_code == 503
        body = Health.model_validate(answer.json())
        assert body.status == "degraded" and body.database == "ok"
        assert body.schema_revision is None and body.schema_up_to_date is False


class TestServiceArea:
    def test_names_each_loaded_graphs_bounding_box(
        self, client: TestClient, graphs: Any, settings: Settings
    ) -> None:
        body = Health.model_validate(client.get("/healthz").json())
        assert set(body.service_area) == set(graphs.by_mode) == {"walk", "bike", "drive"}
        for mode, (west, south, east, north) in body.service_area.items():
            graph = graphs.get(mode).graph
            # The box is the nodes' own extent, to the 6 decimals it is rounded to.
            assert abs(west - graph.lon.min()) <= 1e-6 and abs(east - graph.lon.max()) <= 1e-6
            assert abs(south - graph.lat.min()) <= 1e-6 and abs(north - graph.lat.max()) <= 1e-6
            assert west < east and south < north
        assert body.max_snap_m == settings.max_snap_m

    def test_a_place_beyond_the_box_and_the_snap_limit_is_refused(
        self, client: TestClient, make_member: Any
    ) -> None:
        """What /healthz says is where the members API accepts places."""
        from tests.api.factories import auth, member_body, square

        _, coordinator = make_member(roles=("coordinator",))
        body = Health.model_validate(client.get("/healthz").json())
        west, south, east, north = body.service_area["walk"]
        inside = member_body(home_zone=square((west + east) / 2, (south + north) / 2, 200.0))
        r = client.post("/v1/members", json=inside, headers=auth(coordinator))
        assert r.status_code == 201, r.text
        # 600 m beyond the east edge: more than max_snap_m (300 m) from every walk node.
        lon = east + 600 / (111_320 * 0.49)  # cos(60.2 deg) is about 0.497
        outside = member_body(home_zone=square(lon, (south + north) / 2, 200.0))
        r = client.post("/v1/members", json=outside, headers=auth(coordinator))
        assert r.status_code == 422 and r.json()["error"] == "OutsideServiceArea", r.text

    def test_is_empty_without_graphs(
        self, settings: Settings, engine: Engine, session_factory: Any
    ) -> None:
        from api.graphs import GraphStore

        app = create_app(
            settings, engine=engine, session_factory=session_factory, graphs=GraphStore()
        )
        answer = TestClient(app).get("/healthz")
        assert answer.status_code == 200
        assert answer.json()["service_area"] == {}
