"""`ern purge [--dry-run]`: the retention pass on demand, saying what it removes (or would)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from sqlalchemy.orm import Session

from api.settings import Settings


def run_purge(session: Session, settings: Settings, *, now: datetime, dry_run: bool) -> list[str]:
    """Purge (or, dry, only count) what retention removes; report lines, totals included."""
    from api.alerts import repository as alerts_repo
    from api.alerts.escalation import purge_expired
    from api.groups import texts_repository as groups_repo

    before = now - timedelta(days=settings.alert_retention_days)
    counts = alerts_repo.purge_counts(session, before=before)
    groups_before = now - timedelta(days=settings.group_retention_days)
    counts += groups_repo.purge_counts(session, before=groups_before)
    # The real pass in a savepoint, rolled back when dry: the same rows counted either way.
    savepoint = session.begin_nested()
    purged = purge_expired(session, settings, now=now)
    if dry_run:
        savepoint.rollback()
    else:
        savepoint.commit()
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb}: {purged.alerts} alerts, {purged.live_locations} expired live locations"]
    lines.append(
        f"{verb}: {purged.group_messages} group texts, "
        f"{purged.group_proposals} unpublished group proposals"
    )
    lines.append(f"{verb}: {purged.group_notices} group notices (who is in a group, on publish)")
    lines.append(
        f"{verb}: {purged.rallies} rallies (with their notices), "
        f"{purged.sms_replies} processed SMS replies, "
        f"{purged.key_notices} webhook-key change notices"
    )
    lines += [f"{verb}: {m:%Y-%m} {c} {k}: {n}" for m, c, k, n in counts]
    totals = alerts_repo.purge_totals(session)
    lines += [f"purged so far: {m:%Y-%m} {c} {k}: {n}" for m, c, k, n in totals]
    return lines


def purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would go; remove nothing"),
) -> None:
    """Delete expired live locations, alerts past ERN_ALERT_RETENTION_DAYS and group texts past
    ERN_GROUP_MESSAGE_RETENTION_DAYS; keep counts."""
    from api import database

    settings = Settings()
    url = database.resolve_database_url(settings)
    if settings.embedded:
        database.upgrade(url)
    engine = database.make_engine(url, pool_size=1)
    try:
        with database.transaction(database.make_session_factory(engine)) as session:
            lines = run_purge(session, settings, now=datetime.now(UTC), dry_run=dry_run)
    finally:
        engine.dispose()
    for line in lines:
        typer.echo(line)
