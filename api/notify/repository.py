"""All SQL of the notify domain: inserting, claiming, finishing and listing outbox rows."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    Table,
    Text,
    bindparam,
    column,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.database import DriverStatement, array_literal
from api.members.models import Member
from api.notify.models import DUE_PREDICATE, Delivery

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


# The worker's statements run for every batch: built once at import, as Core on the table
# (the ORM's bulk-update path cost ~9 % of `ern serve`'s CPU), so SQLAlchemy compiles each once
# and memoises its cache key.
_outbox = cast(Table, Delivery.__table__)
_member = cast(Table, Member.__table__)

_abandoned = (
    select(_outbox.c.id)
    .where(
        _outbox.c.state == "sending",
        _outbox.c.next_attempt_at <= bindparam("now_at"),
        _outbox.c.attempts >= bindparam("max_attempts"),
    )
    .with_for_update(skip_locked=True)
    .cte("abandoned")
)
_FAIL_ABANDONED = (
    update(_outbox)
    .where(_outbox.c.id == _abandoned.c.id)
    .values(state="failed", last_error=bindparam("message"), next_attempt_at=bindparam("now_at"))
)

_picked = (
    select(_outbox.c.id)
    .where(
        text(DUE_PREDICATE),
        _outbox.c.next_attempt_at <= bindparam("now_at"),
        or_(_outbox.c.state == "pending", _outbox.c.attempts < bindparam("max_attempts")),
    )
    .order_by(_outbox.c.next_attempt_at, _outbox.c.id)
    .limit(bindparam("batch_limit", type_=Integer))
    .with_for_update(skip_locked=True)
    .cte("picked")
)
_CLAIM = (
    update(_outbox)
    .where(_outbox.c.id == _picked.c.id, _member.c.id == _outbox.c.member_id)
    .values(
        state="sending", attempts=_outbox.c.attempts + 1, next_attempt_at=bindparam("lease_until")
    )
    .returning(
        _outbox.c.id,
        _outbox.c.delivery_id,
        _outbox.c.alert_id,
        _outbox.c.member_id,
        _outbox.c.channel,
        _outbox.c.message_kind,
        _outbox.c.payload,
        _outbox.c.attempts,
        _member.c.contact_ciphertext,
    )
)


def _array(name: str, item: Any) -> Any:
    # Typed, so the SQL casts the array literal (database.array_literal) to its array type.
    return bindparam(name, type_=ARRAY(item))


# One row per outcome, unnested from parallel arrays: a batch is one statement whatever its size.
_outcome = (
    func.unnest(
        _array("ids", BigInteger),
        _array("attempt_nos", Integer),
        _array("states", Text),
        _array("next_attempts_at", DateTime(timezone=True)),
        _array("errors", Text),
        _array("sent_ats", DateTime(timezone=True)),
    )
    .table_valued(
        column("id", BigInteger),
        column("attempt", Integer),
        column("state", Text),
        column("next_attempt_at", DateTime(timezone=True)),
        column("last_error", Text),
        column("sent_at", DateTime(timezone=True)),
        name="outcome",
    )
    .render_derived()
)
_FINISH = (
    update(_outbox)
    .where(
        _outbox.c.id == _outcome.c.id,
        _outbox.c.attempts == _outcome.c.attempt,
        _outbox.c.state == "sending",
    )
    .values(
        state=_outcome.c.state,
        next_attempt_at=_outcome.c.next_attempt_at,
        last_error=_outcome.c.last_error,
        sent_at=_outcome.c.sent_at,
    )
)

# Every batch runs these two: compiled once, run without SQLAlchemy's per-row work (the claim's
# rows and the record's six lists were ~110 us of the ~275 us CPU per delivery).
_CLAIM_SQL = DriverStatement.of(_CLAIM)
_FINISH_SQL = DriverStatement.of(_FINISH)


@dataclass(frozen=True)
class Finished:
    """The outcome of one attempt, to be stored on its row."""

    id: int
    attempt: int
    state: str
    next_attempt_at: datetime
    last_error: str | None
    sent_at: datetime | None


def fail_abandoned(session: Session, *, now: datetime, max_attempts: int) -> int:
    """Fail rows whose last allowed attempt lost its worker (lease expired); rows changed."""
    message = (
        f"the worker was lost during attempt {max_attempts} (it may have been delivered); "
        f"gave up after {max_attempts} attempts"
    )
    params = {"now_at": now, "max_attempts": max_attempts, "message": message}
    return int(session.execute(_FAIL_ABANDONED, params).rowcount or 0)  # type: ignore[attr-defined]


def claim_due(
    session: Session, *, now: datetime, lease_until: datetime, limit: int, max_attempts: int
) -> list[Claimed]:
    """Lease up to ``limit`` due rows (pending, or sending with an expired lease) for one attempt.

    Rows locked by another worker's claim are skipped, so no two workers lease the same row;
    a lease that expired on the last allowed attempt is not renewed (see fail_abandoned).
    """
    params = {
        "now_at": now,
        "lease_until": lease_until,
        "batch_limit": limit,
        "max_attempts": max_attempts,
    }
    claims = [Claimed(*row) for row in _CLAIM_SQL.rows(session, params)]
    return sorted(claims, key=lambda c: c.id)


def finish_attempts(session: Session, outcomes: Sequence[Finished]) -> int:
    """Record attempts' outcomes in one statement; the number of rows changed.

    Rows re-leased since (attempts moved on, or no longer ``sending``) are left alone.
    """
    if not outcomes:
        return 0
    params = {
        "ids": array_literal([o.id for o in outcomes]),
        "attempt_nos": array_literal([o.attempt for o in outcomes]),
        "states": array_literal([o.state for o in outcomes]),
        "next_attempts_at": array_literal([o.next_attempt_at for o in outcomes]),
        "errors": array_literal([o.last_error for o in outcomes]),
        "sent_ats": array_literal([o.sent_at for o in outcomes]),
    }
    return _FINISH_SQL.rowcount(session, params)


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


def delete_kind_before(session: Session, *, message_kind: str, before: datetime) -> int:
    """Delete the outbox rows of one message kind queued before ``before``; the number deleted."""
    stmt = (
        delete(Delivery)
        .where(Delivery.message_kind == message_kind, Delivery.created_at < before)
        .execution_options(synchronize_session=False)
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


# Claimable now (pending, or a lease that ran out), by the due index; see claim_due.
_OLDEST_DUE = text(
    f"SELECT min(next_attempt_at) FROM outbox WHERE {DUE_PREDICATE} AND next_attempt_at <= :now"
)


def oldest_due(conn: Connection, *, now: datetime) -> datetime | None:
    """Since when the longest-waiting claimable delivery has been due; None if none is."""
    oldest: datetime | None = conn.execute(_OLDEST_DUE, {"now": now}).scalar_one()
    return oldest


def deliveries_of(session: Session, alert_id: uuid.UUID) -> Sequence[Delivery]:
    """Every outbox row of one alert, oldest first."""
    return session.scalars(
        select(Delivery).where(Delivery.alert_id == alert_id).order_by(Delivery.id)
    ).all()


# The newest attempted deliveries of one channel (in flight ones left out), newest first.
_RECENT_OUTCOMES = text(
    "SELECT state, last_error FROM outbox WHERE channel = :channel AND attempts > 0 "
    "AND state IN ('sent', 'failed', 'pending') ORDER BY id DESC LIMIT :limit"
)


def recent_outcomes(conn: Connection, *, channel: str, limit: int) -> list[tuple[str, str | None]]:
    """(state, last_error) of the channel's ``limit`` newest attempted deliveries, newest first.

    ``pending`` there means an attempt failed and a retry is due.
    """
    rows = conn.execute(_RECENT_OUTCOMES, {"channel": channel, "limit": limit}).all()
    return [(str(state), error) for state, error in rows]
