"""`ern purge [--dry-run]`: what it removes (or would), and per-month counts that outlive rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.alerts.models import Alert, PurgeCount
from api.cli import app as cli_app
from api.cli.purge import run_purge
from api.notify.models import Delivery
from api.settings import Settings
from tests.alerts.helpers import post_alert
from tests.api.factories import auth


def count(db: Session, model: Any) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


class TestPurge:
    def test_dry_run_counts_then_purge_removes_and_keeps_monthly_counts(
        self,
        api: TestClient,
        db: Session,
        settings: Settings,
        clock: Any,
        site: Any,
        crowd: list[Any],
        make_member: Any,
    ) -> None:
        _, token = make_member(roles=())
        body = {"location": site.point(), "kind": "personal", "needed": 1}
        alert_id = post_alert(api, token, body, key=str(uuid.uuid4())).json()["id"]
        assert api.post(f"/v1/alerts/{alert_id}/close", headers=auth(token)).status_code == 200
        alerts, deliveries = count(db, Alert), count(db, Delivery)
        assert deliveries > 0
        later = clock.now() + timedelta(days=settings.alert_retention_days + 1)

        dry = run_purge(db, settings, now=later, dry_run=True)
        assert dry[0].startswith(f"would remove: {alerts} alerts")
        month = f"{clock.now():%Y-%m}"
        assert f"would remove: {month} alert personal: 1" in dry
        assert f"would remove: {month} notification webhook: {deliveries}" in dry
        assert (count(db, Alert), count(db, Delivery), count(db, PurgeCount)) == (
            alerts,
            deliveries,
            0,
        )

        done = run_purge(db, settings, now=later, dry_run=False)
        assert done[0].startswith(f"removed: {alerts} alerts")
        assert f"purged so far: {month} alert personal: 1" in done
        assert (count(db, Alert), count(db, Delivery)) == (0, 0)
        again = run_purge(db, settings, now=later, dry_run=False)
        assert again[0].startswith("removed: 0 alerts")
        assert f"purged so far: {month} notification webhook: {deliveries}" in again

    def test_the_command_runs_against_the_configured_database(
        self, settings: Settings, tmp_path: Any
    ) -> None:
        env = {
            "ERN_DATABASE_URL": str(settings.database_url),
            "ERN_SECRET_KEY": settings.secret_key.get_secret_value(),  # type: ignore[union-attr]
            "ERN_VAR_DIR": str(tmp_path),
        }
        result = CliRunner().invoke(cli_app, ["purge", "--dry-run"], env=env)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        for what in ("alerts", "group texts", "group notices", "rallies", "SMS replies"):
            assert any(line.startswith("would remove: ") and what in line for line in lines)

    def test_the_command_is_listed(self) -> None:
        result = CliRunner().invoke(cli_app, ["purge", "--help"])
        assert result.exit_code == 0
        assert "--dry-run" in result.output
