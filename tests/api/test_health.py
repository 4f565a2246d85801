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
