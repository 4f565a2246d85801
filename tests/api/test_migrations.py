"""Migrations: every revision upgrades and downgrades cleanly on a real PostGIS database."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, text

from api.database import alembic_config, head_revision
from tests.api.test_health import empty_engine  # noqa: F401  (fixture, reused)


def _functions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT proname FROM pg_proc WHERE proname LIKE 'ern\\_%'")
        ).scalars()
        return set(rows)


def _tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        return set(rows) - {"spatial_ref_sys"}


def test_upgrade_downgrade_upgrade(empty_engine: Engine) -> None:  # noqa: F811
    with empty_engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    cfg = alembic_config(empty_engine.url.render_as_string(hide_password=False))
    command.upgrade(cfg, "head")
    assert "ern_raise_alert" in _functions(empty_engine)
    assert {"member", "outbox", "alert", "alert_responder"} <= _tables(empty_engine)
    command.downgrade(cfg, "0004")
    assert "ern_raise_alert" not in _functions(empty_engine)
    assert "alert" in _tables(empty_engine)
    command.downgrade(cfg, "base")
    assert _tables(empty_engine) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    assert "ern_raise_alert" in _functions(empty_engine)
    with empty_engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == head_revision()
