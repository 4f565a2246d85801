"""All SQL of the notify domain: inserting, claiming, finishing and listing outbox rows."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.members.models import Member
from api.notify.models import DUE_STATES, Delivery

log = logging.getLogger("ern.notify")

# LISTEN/NOTIFY channel that wakes idle workers when an enqueue commits.
WAKEUP_CHANNEL = "ern_outbox"


@dataclass(frozen=True)
class Claimed:
    """A row the worker leased for one attempt, with the member's encrypted contact details."""

    id: int
    delivery_id: str
    alert_id: uuid.UUID
    member_id: uuid.UUID
    channel: str
    message_kind: str
    payload: dict[str, Any]
    attempt: int
    contact_ciphertext: bytes | None


def insert_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert outbox rows, skipping delivery ids that exist; the number of rows created."""
    if not rows:
        return 0
    # One statement compiled once and cached, the rows as parameters (SQLAlchemy batches them
    # into multi-row VALUES): building .values(rows) compiled a new statement for every alert,
    # a third of POST /v1/alerts' CPU time in scripts/loadtest.py.
    stmt = (
        insert(Delivery)
        .on_conflict_do_nothing(index_elements=[Delivery.delivery_id])
        .returning(Delivery.id)
    )
    return len(session.execute(stmt, list(rows)).all())


def signal_workers(session: Session) -> None:
    """Wake listening workers when the caller's transaction commits (nothing if it rolls back)."""
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKEUP_CHANNEL})


class Wakeup:
    """A LISTEN connection: wait() returns when an enqueue commits; polling covers the rest."""

    def __init__(self, engine: Engine) -> None:
        url = engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()

    @property
    def listening(self) -> bool:
        """Whether a LISTEN connection is open."""
        return self._conn is not None and not self._conn.closed

    def connect(self) -> bool:
        """Open the LISTEN connection if it is not; False if the database cannot be reached."""
        with self._lock:
            if self.listening:
                return True
            try:
                conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
                conn.execute(f"LISTEN {WAKEUP_CHANNEL}")
            except psycopg.Error as exc:
                log.warning("outbox wake-ups unavailable, polling only (%s)", type(exc).__name__)
                return False
            self._conn = conn
            return True

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for a wake-up; True if one came."""
        if not self.connect() or self._conn is None:
            return False
        try:
            woken = any(True for _ in self._conn.notifies(timeout=timeout_s, stop_after=1))
            # Several commits may have signalled: one round of claiming serves them all.
            while any(True for _ in self._conn.notifies(timeout=0, stop_after=1)):
                pass
            return woken
        except psycopg.Error as exc:
            log.warning("outbox LISTEN connection lost (%s)", type(exc).__name__)
            self.close()
            return False

    def close(self) -> None:
        """Close the LISTEN connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def fail_abandoned(session: Session, *, now: datetime, max_attempts: int) -> int:
    """Fail rows whose last allowed attempt lost its worker (lease expired); rows changed."""
    abandoned = (
        select(Delivery.id)
        .where(
            Delivery.state == "sending",
            Delivery.next_attempt_at <= now,
            Delivery.attempts >= max_attempts,
        )
        .with_for_update(skip_locked=True)
        .cte("abandoned")
    )
    message = (
        f"the worker was lost during attempt {max_attempts} (it may have been delivered); "
        f"gave up after {max_attempts} attempts"
    )
    stmt = (
        update(Delivery)
        .where(Delivery.id == abandoned.c.id)
        .values(state="failed", last_error=message, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def claim_due(
    session: Session, *, now: datetime, lease_until: datetime, limit: int, max_attempts: int
) -> list[Claimed]:
    """Lease up to ``limit`` due rows (pending, or sending with an expired lease) for one attempt.

    Rows locked by another worker's claim are skipped, so no two workers lease the same row;
    a lease that expired on the last allowed attempt is not renewed (see fail_abandoned).
    """
    picked = (
        select(Delivery.id)
        .where(
            Delivery.state.in_(DUE_STATES),
            Delivery.next_attempt_at <= now,
            (Delivery.state == "pending") | (Delivery.attempts < max_attempts),
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    stmt = (
        update(Delivery)
        .where(Delivery.id == picked.c.id, Member.id == Delivery.member_id)
        .values(state="sending", attempts=Delivery.attempts + 1, next_attempt_at=lease_until)
        .returning(
            Delivery.id,
            Delivery.delivery_id,
            Delivery.alert_id,
            Delivery.member_id,
            Delivery.channel,
            Delivery.message_kind,
            Delivery.payload,
            Delivery.attempts,
            Member.contact_ciphertext,
        )
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(stmt).all()
    claims = [
        Claimed(
            id=r.id,
            delivery_id=r.delivery_id,
            alert_id=r.alert_id,
            member_id=r.member_id,
            channel=r.channel,
            message_kind=r.message_kind,
            payload=r.payload,
            attempt=r.attempts,
            contact_ciphertext=r.contact_ciphertext,
        )
        for r in rows
    ]
    return sorted(claims, key=lambda c: c.id)


def finish_attempt(
    session: Session,
    *,
    row_id: int,
    attempt: int,
    state: str,
    next_attempt_at: datetime,
    last_error: str | None,
    sent_at: datetime | None,
) -> bool:
    """Record an attempt's outcome, unless the row was re-leased since (then nothing changes)."""
    stmt = (
        update(Delivery)
        .where(Delivery.id == row_id, Delivery.attempts == attempt, Delivery.state == "sending")
        .values(
            state=state, next_attempt_at=next_attempt_at, last_error=last_error, sent_at=sent_at
        )
        .execution_options(synchronize_session=False)
    )
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def cancel_pending(
    session: Session,
    *,
    alert_id: uuid.UUID,
    member_ids: Sequence[uuid.UUID] | None,
    message_kind: str | None,
) -> int:
    """Cancel an alert's rows that are still pending (optionally for some members or one kind)."""
    stmt = (
        update(Delivery)
        .where(Delivery.alert_id == alert_id, Delivery.state == "pending")
        .values(state="cancelled")
        .execution_options(synchronize_session=False)
    )
    if member_ids is not None:
        stmt = stmt.where(Delivery.member_id.in_(list(member_ids)))
    if message_kind is not None:
        stmt = stmt.where(Delivery.message_kind == message_kind)
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def list_deliveries(
    session: Session,
    *,
    alert_id: uuid.UUID | None,
    state: str | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[Delivery], int]:
    """One page of outbox rows (newest first) matching the filters, and the total."""
    query = select(Delivery)
    if alert_id is not None:
        query = query.where(Delivery.alert_id == alert_id)
    if state is not None:
        query = query.where(Delivery.state == state)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit).offset(offset)
    ).all()
    return rows, int(total)


def delete_for_alerts(session: Session, alert_ids: Sequence[uuid.UUID]) -> int:
    """Delete every outbox row of these alerts; the number deleted."""
    if not alert_ids:
        return 0
    stmt = (
        delete(Delivery)
        .where(Delivery.alert_id.in_(list(alert_ids)))
        .execution_options(synchronize_session=False)
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def deliveries_of(session: Session, alert_id: uuid.UUID) -> Sequence[Delivery]:
    """Every outbox row of one alert, oldest first."""
    return session.scalars(
        select(Delivery).where(Delivery.alert_id == alert_id).order_by(Delivery.id)
    ).all()
