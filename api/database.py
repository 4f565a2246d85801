"""Engine and session factory, the naming convention, and Alembic migrations run from code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg as pg_driver
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.expression import ClauseElement

from api.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    """Declarative base of every ern table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def resolve_database_url(settings: Settings, *, start: bool = True) -> str:
    """The configured URL, or the embedded cluster's (started on demand)."""
    if settings.database_url:
        return settings.database_url
    from api.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(settings.var_dir)
    return cluster.start() if start else cluster.url()


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """A pooled engine; connections are checked before use so a restarted server is survived."""
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, future=True
    )


# While the database is away (restart, failover, connection limit) a statement fails with one of
# these; raw psycopg errors come from statements run on the driver connection (DriverStatement).
DATABASE_AWAY = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    pg_driver.OperationalError,
    pg_driver.InterfaceError,
)


def database_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be used now (not a fault of the request)."""
    if isinstance(exc, DATABASE_AWAY):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@dataclass(frozen=True)
class DriverStatement:
    """A Core statement compiled once to psycopg's SQL, run on a session's own connection.

    For the few statements every alert and every outbox round runs: SQLAlchemy's per-execution
    work (execution context, bind and result processing) cost more CPU than psycopg and
    PostgreSQL together.
    The statement joins the session's transaction; rows come back as psycopg's plain tuples
    (uuid.UUID, datetime, list for arrays), and the statement is prepared on the connection.
    """

    sql: str
    defaults: Mapping[str, Any]

    @classmethod
    def of(cls, statement: ClauseElement) -> DriverStatement:
        """Compile ``statement`` once; its literal values become default parameters."""
        compiled = statement.compile(dialect=_DRIVER_DIALECT)
        sql = str(compiled)
        if "POSTCOMPILE" in sql:
            # An expanding IN (values known only at execution): say it with constants instead.
            msg = f"an expanding IN cannot be compiled once: {sql}"
            raise ValueError(msg)
        return cls(sql, dict(compiled.params))

    def rows(self, session: Session, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """All rows of the statement with ``params``, inside the session's transaction."""
        rows: list[tuple[Any, ...]] = self._run(session, params).fetchall()
        return rows

    def rowcount(self, session: Session, params: Mapping[str, Any]) -> int:
        """Run a statement without rows to return; the number of rows it changed."""
        return int(self._run(session, params).rowcount)

    def _run(self, session: Session, params: Mapping[str, Any]) -> Any:
        driver = session.connection().connection.driver_connection
        assert driver is not None
        return driver.execute(self.sql, {**self.defaults, **params}, prepare=True)


_DRIVER_DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]


def array_literal(values: Sequence[object]) -> str:
    """A PostgreSQL array literal, to be cast to the array type in SQL (``CAST(:x AS uuid[])``).

    One text parameter instead of a list: psycopg adapts a list element by element, which
    cost more than the statement. UUIDs, ints and floats go bare (floats at full precision),
    None as NULL, datetimes in ISO 8601, anything else as quoted text.
    """
    if all(isinstance(v, uuid.UUID) for v in values):
        return "{" + ",".join(map(str, values)) + "}"
    if all(isinstance(v, float) for v in values):
        return "{" + ",".join(map(repr, values)) + "}"
    return "{" + ",".join(map(_array_item, values)) + "}"


def _array_item(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float | uuid.UUID) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    item = value.isoformat() if isinstance(value, datetime) else str(value)
    return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error (for workers and the CLI)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    """Alembic configuration pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest migration shipped with this code (read from disk once: /healthz asks often)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def schema_status(engine: Engine) -> dict[str, str | bool | None]:
    """Current and head revisions, and whether the schema is up to date."""
    head = head_revision()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        current = MigrationContext.configure(conn).get_current_revision()
    return {"current": current, "head": head, "up_to_date": current == head}


def other_connections(session: Session) -> int:
    """Client connections to this database other than the session's own (servers, workers, psql)."""
    count = session.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
    ).scalar_one()
    return int(count)
