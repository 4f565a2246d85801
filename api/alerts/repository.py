"""All SQL of the alerts domain; functions flush, the caller's transaction commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Date, Select, Table, delete, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, lazyload, load_only

from api.alerts.models import (
    NOTIFIED_STATES,
    Alert,
    AlertResponder,
    ErasedResponse,
    PurgeCount,
)
from api.database import DriverStatement, array_literal
from api.members.models import Member
from api.notify.models import Delivery


@dataclass(frozen=True)
class RaiseRequest:
    """Everything ern_raise_alert (migration 0005) needs to store a new alert in one call."""

    id: uuid.UUID
    requester_id: uuid.UUID
    idempotency_key: str
    request_hash: bytes
    kind: str
    needed: int
    note: str | None
    lon: float
    lat: float
    presence_at: datetime
    exercise: bool
    ranking: str
    now: datetime
    next_wave_at: datetime | None
    key_since: datetime
    rate_limit: int | None
    rate_since: datetime
    members: list[uuid.UUID]
    etas: list[float]
    modes: list[str]
    wave_size: int
    first_state: str
    notified_at: datetime | None
    delivery_ids: list[str]
    delivery_members: list[uuid.UUID]
    channels: list[str]
    payloads: list[dict[str, Any]]


@dataclass(frozen=True)
class RaiseOutcome:
    """created, replay or key_reused (with that alert's id), or rate_limited (count, oldest)."""

    outcome: str
    alert_id: uuid.UUID | None
    live_count: int | None
    oldest: datetime | None


_RAISE = text(
    """
    SELECT outcome, alert_id, live_count, oldest FROM ern_raise_alert(
        :lock_key, :id, :requester_id, :idempotency_key, :request_hash,
        :kind, :needed, :note, :lon, :lat,
        :presence_at, :exercise, :ranking, :now,
        :next_wave_at, :key_since,
        :rate_limit, :rate_since,
        CAST(:members AS uuid[]), CAST(:etas AS double precision[]), CAST(:modes AS text[]),
        :wave_size, :first_state, :notified_at,
        CAST(:delivery_ids AS text[]), CAST(:delivery_members AS uuid[]),
        CAST(:channels AS text[]),
        ARRAY(SELECT p.value FROM jsonb_array_elements(CAST(:payloads AS jsonb))
              WITH ORDINALITY AS p(value, n) ORDER BY p.n)
    )
    """
)

_RAISE_SQL = DriverStatement.of(_RAISE)

# The arrays go as array literals (one text parameter each) and the payloads as one JSON
# array: psycopg's per-element adaptation of lists was a fifth of the request's CPU.
_ARRAYS = ("members", "etas", "modes", "delivery_ids", "delivery_members", "channels")


def _lock_key(requester_id: uuid.UUID) -> int:
    # The top 63 bits of the id: collisions between members only cost a short wait.
    return int.from_bytes(requester_id.bytes[:8], "big", signed=True)


def raise_alert(session: Session, request: RaiseRequest) -> RaiseOutcome:
    """Store a new alert, its ranking and outbox rows in one round trip (see migration 0005)."""
    params = {f.name: getattr(request, f.name) for f in fields(request)}
    for name in _ARRAYS:
        params[name] = array_literal(params[name])
    params["payloads"] = json.dumps(request.payloads)
    params["lock_key"] = _lock_key(request.requester_id)
    [row] = _RAISE_SQL.rows(session, params)
    return RaiseOutcome(
        outcome=row[0],
        alert_id=row[1],
        live_count=None if row[2] is None else int(row[2]),
        oldest=row[3],
    )


def get_alert(session: Session, alert_id: uuid.UUID, *, for_update: bool = False) -> Alert | None:
    """One alert, optionally locked for the rest of the transaction."""
    return session.get(Alert, alert_id, with_for_update=for_update, populate_existing=True)


_INSERT_RESPONDERS = insert(cast(Table, AlertResponder.__table__))


def insert_responders(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Store the ranked candidates of an alert."""
    if rows:
        # A Core INSERT on the table, cached once, the rows as executemany parameters: the ORM
        # bulk path (insert(AlertResponder)) cost ~15 % of POST /v1/alerts' CPU (py-spy --gil).
        session.execute(_INSERT_RESPONDERS, list(rows))


def responder(
    session: Session, alert_id: uuid.UUID, member_id: uuid.UUID, *, for_update: bool = False
) -> AlertResponder | None:
    """One member's row for an alert."""
    return session.get(
        AlertResponder, (alert_id, member_id), with_for_update=for_update, populate_existing=True
    )


def responders_with_handles(
    session: Session, alert_id: uuid.UUID, *, states: Iterable[str] | None = None
) -> list[tuple[AlertResponder, str]]:
    """Rows of an alert with the members' handles, best first."""
    stmt = (
        select(AlertResponder, Member.handle)
        .join(Member, Member.id == AlertResponder.member_id)
        .where(AlertResponder.alert_id == alert_id)
        .order_by(AlertResponder.eta_s, AlertResponder.position)
        .execution_options(populate_existing=True)
    )
    if states is not None:
        stmt = stmt.where(AlertResponder.state.in_(tuple(states)))
    return [(row, handle) for row, handle in session.execute(stmt).all()]


def ranked_member_ids(session: Session, alert_id: uuid.UUID) -> list[uuid.UUID]:
    """Everyone ranked for the alert so far."""
    stmt = select(AlertResponder.member_id).where(AlertResponder.alert_id == alert_id)
    return list(session.scalars(stmt))


def count_in_states(session: Session, alert_id: uuid.UUID, states: Iterable[str]) -> int:
    """How many rows of the alert are in one of ``states``."""
    stmt = select(func.count()).where(
        AlertResponder.alert_id == alert_id, AlertResponder.state.in_(tuple(states))
    )
    return int(session.execute(stmt).scalar_one())


def rows_in_states(
    session: Session,
    alert_id: uuid.UUID,
    states: Iterable[str],
    *,
    limit: int | None = None,
    skip: Iterable[uuid.UUID] = (),
) -> list[AlertResponder]:
    """Rows of the alert in ``states``, best first, leaving out the members in ``skip``.

    Not locked: their states change only under the alert's lock. Before updating them or
    queueing messages to their members, hold the members (lock_members).
    """
    stmt = (
        select(AlertResponder)
        .where(AlertResponder.alert_id == alert_id, AlertResponder.state.in_(tuple(states)))
        .order_by(AlertResponder.eta_s, AlertResponder.position)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    skipped = tuple(set(skip))
    if skipped:
        stmt = stmt.where(AlertResponder.member_id.not_in(skipped))
    return list(session.scalars(stmt))


def lock_members(session: Session, member_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Hold members until commit (FOR KEY SHARE, in id order); the ids of those still there.

    A member's deletion locks the member row, then cascades to their alert and outbox rows.
    Taking the member first, before touching those rows, takes the locks in the same order:
    a deletion in progress is waited for (and its member left out), never deadlocked with.
    """
    ids = sorted(set(member_ids))
    if not ids:
        return set()
    stmt = (
        select(Member.id)
        .where(Member.id.in_(ids))
        .order_by(Member.id)
        .with_for_update(read=True, key_share=True)
    )
    return set(session.scalars(stmt))


def mark_notified(
    session: Session,
    alert_id: uuid.UUID,
    member_ids: Sequence[uuid.UUID],
    *,
    wave: int,
    now: datetime,
) -> None:
    """Move reserve rows into a wave."""
    if member_ids:
        session.execute(
            update(AlertResponder)
            .where(AlertResponder.alert_id == alert_id, AlertResponder.member_id.in_(member_ids))
            .values(state="notified", wave=wave, notified_at=now)
            .execution_options(synchronize_session=False)
        )


def set_state(
    session: Session, alert_id: uuid.UUID, member_ids: Sequence[uuid.UUID], state: str
) -> None:
    """Set the state of some rows of an alert."""
    if member_ids:
        session.execute(
            update(AlertResponder)
            .where(AlertResponder.alert_id == alert_id, AlertResponder.member_id.in_(member_ids))
            .values(state=state)
            .execution_options(synchronize_session=False)
        )


def members_by_id(session: Session, member_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Member]:
    """Members by id (for notifications)."""
    ids = list(member_ids)
    if not ids:
        return {}
    # Only the contact is needed to notify anyone: no zones, routes or geometry (still
    # loadable on access, so callers see whole members).
    stmt = (
        select(Member)
        .where(Member.id.in_(ids))
        .options(
            load_only(Member.id, Member.contact_ciphertext),
            lazyload(Member.zones),
            lazyload(Member.routes),
        )
    )
    return {m.id: m for m in session.scalars(stmt)}


def handle_of(session: Session, member_id: uuid.UUID | None) -> str | None:
    """A member's handle, or None for a deleted member."""
    if member_id is None:
        return None
    return session.execute(select(Member.handle).where(Member.id == member_id)).scalar_one_or_none()


def lock_due_alert(session: Session, *, now: datetime) -> Alert | None:
    """The most overdue open alert whose next wave is due, locked; locked ones are skipped."""
    stmt = (
        select(Alert)
        .where(Alert.status == "open", Alert.next_wave_at.is_not(None), Alert.next_wave_at <= now)
        .order_by(Alert.next_wave_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one_or_none()


def postpone_wave(session: Session, alert_id: uuid.UUID, *, until: datetime) -> None:
    """Move an open alert's next wave to ``until`` (after a failed escalation)."""
    session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status == "open", Alert.next_wave_at.is_not(None))
        .values(next_wave_at=until)
        .execution_options(synchronize_session=False)
    )


def _month_raised() -> Any:
    return func.date_trunc("month", func.timezone("UTC", Alert.created_at)).cast(Date)


def _expired(before: datetime) -> Any:
    return func.coalesce(Alert.closed_at, Alert.created_at) < before


def purge_counts(session: Session, *, before: datetime) -> list[tuple[date, str, str, int]]:
    """What purging alerts before ``before`` removes: (month raised, category, key, count)."""
    month = _month_raised()
    alerts = (
        select(month, literal("alert"), Alert.kind, func.count())
        .where(_expired(before))
        .group_by(month, Alert.kind)
    )
    notifications = (
        select(month, literal("notification"), Delivery.channel, func.count())
        .join(Alert, Alert.id == Delivery.alert_id)
        .where(_expired(before))
        .group_by(month, Delivery.channel)
    )
    rows = session.execute(alerts.union_all(notifications)).all()
    return sorted((m, c, k, int(n)) for m, c, k, n in rows)


def add_purge_counts(session: Session, counts: Sequence[tuple[date, str, str, int]]) -> None:
    """Add counts to the per-month totals."""
    if not counts:
        return
    stmt = insert(PurgeCount).values(
        [{"month": m, "category": c, "key": k, "count": n} for m, c, k, n in counts]
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["month", "category", "key"],
            set_={"count": PurgeCount.count + stmt.excluded["count"]},
        )
    )


def purge_totals(session: Session) -> list[tuple[date, str, str, int]]:
    """Everything purged so far, per month raised."""
    stmt = select(PurgeCount.month, PurgeCount.category, PurgeCount.key, PurgeCount.count)
    return [
        (m, c, k, int(n))
        for m, c, k, n in session.execute(
            stmt.order_by(PurgeCount.month, PurgeCount.category, PurgeCount.key)
        )
    ]


def delete_alerts_before(session: Session, *, before: datetime) -> list[uuid.UUID]:
    """Delete alerts closed (or, never closed, raised) before ``before``; their ids."""
    stmt = (
        delete(Alert)
        .where(func.coalesce(Alert.closed_at, Alert.created_at) < before)
        .returning(Alert.id)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class AlertFilter:
    """Coordinator list filters."""

    status: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0


def _counts_by_alert(states: tuple[str, ...]) -> Any:
    present = (
        select(func.count())
        .where(AlertResponder.alert_id == Alert.id, AlertResponder.state.in_(states))
        .correlate(Alert)
        .scalar_subquery()
    )
    erased = (
        select(func.count())
        .where(ErasedResponse.alert_id == Alert.id, ErasedResponse.state.in_(states))
        .correlate(Alert)
        .scalar_subquery()
    )
    return present + erased


def list_alerts(session: Session, filters: AlertFilter) -> list[tuple[Alert, str | None, int, int]]:
    """Alerts newest first with requester handle, notified and accepted counts."""
    stmt: Select[Any] = (
        select(
            Alert,
            Member.handle,
            _counts_by_alert(NOTIFIED_STATES),
            _counts_by_alert(("accepted",)),
        )
        .outerjoin(Member, Member.id == Alert.requester_id)
        .order_by(Alert.created_at.desc(), Alert.id)
        .limit(filters.limit)
        .offset(filters.offset)
    )
    if filters.status is not None:
        stmt = stmt.where(Alert.status == filters.status)
    if filters.kind is not None:
        stmt = stmt.where(Alert.kind == filters.kind)
    if filters.since is not None:
        stmt = stmt.where(Alert.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(Alert.created_at < filters.until)
    return [(a, h, int(n), int(k)) for a, h, n, k in session.execute(stmt).all()]


def keep_erased_counts(session: Session, member_id: uuid.UUID) -> None:
    """Copy the member's alert states, without the member, before its rows go (erasure)."""
    rows = select(AlertResponder.alert_id, AlertResponder.state).where(
        AlertResponder.member_id == member_id
    )
    session.execute(insert(ErasedResponse).from_select(["alert_id", "state"], rows))


def erased_count(session: Session, alert_id: uuid.UUID, states: Iterable[str]) -> int:
    """How many erased members' rows of the alert were in one of ``states``."""
    stmt = select(func.count()).where(
        ErasedResponse.alert_id == alert_id, ErasedResponse.state.in_(tuple(states))
    )
    return int(session.execute(stmt).scalar_one())


# Outcomes that say whether a notified member accepted (stood down: never had the chance).
_OUTCOME_STATES = ("notified", "accepted", "declined")


def _acceptance_sql(*, include_exercises: bool, network: bool) -> DriverStatement:
    states = ", ".join(f"'{state}'" for state in _OUTCOME_STATES)  # constants, no quotes in them
    answered = f"r.state IN ({states})"
    counted = "a.created_at >= :since AND a.status <> 'open'" + (
        "" if include_exercises else " AND a.exercise IS false"
    )
    counts = "count(*) FILTER (WHERE r.state = 'accepted'), count(*)"
    # The candidates' answered rows drive (ix_alert_responder_outcome), each looking up its
    # alert by key: a scalar subquery is not flattened into a join, so the plan cannot turn
    # to scanning the window's alerts, whose number grows with the history.
    members = (
        f"SELECT r.member_id, {counts} FROM alert_responder AS r"
        f" WHERE {answered} AND r.member_id = ANY(CAST(:members AS uuid[]))"
        f" AND (SELECT {counted} FROM alert AS a WHERE a.id = r.alert_id) GROUP BY r.member_id"
    )
    totals = (
        f"SELECT CAST(NULL AS uuid), {counts}"
        " FROM alert_responder AS r JOIN alert AS a ON a.id = r.alert_id"
        f" WHERE {answered} AND {counted} UNION ALL "
    )
    return DriverStatement.of(text((totals if network else "") + members))


# Every alert runs one of them: the candidates' own counts and, unless the caller knows them
# already, the network's totals (the row without a member), in one prepared round trip on the
# driver connection. The totals read every outcome of the window; the candidates' counts only
# their own answered rows.
_ACCEPTANCE_SQL = {
    (flag, network): _acceptance_sql(include_exercises=flag, network=network)
    for flag in (False, True)
    for network in (False, True)
}


def acceptance_history(
    session: Session,
    member_ids: Sequence[uuid.UUID],
    *,
    since: datetime,
    include_exercises: bool,
    network: bool = True,
) -> tuple[dict[uuid.UUID, tuple[int, int]], tuple[int, int] | None]:
    """(accepted, notified) per member and for the whole network, alerts raised since ``since``.

    Only alerts no longer open count (an open one may still be answered); exercises only when
    ``include_exercises``. Without ``network`` the network's totals are not counted (None).
    """
    if session.autoflush:
        session.flush()  # what the ORM's queries did first: pending answers count
    rows = _ACCEPTANCE_SQL[include_exercises, network].rows(
        session, {"since": since, "members": array_literal(list(member_ids))}
    )
    per: dict[uuid.UUID, tuple[int, int]] = {}
    total = (0, 0) if network else None
    for member_id, accepted, notified in rows:
        if member_id is None:
            total = (int(accepted), int(notified))
        else:
            per[member_id] = (int(accepted), int(notified))
    return per, total


def delete_erased(session: Session, alert_ids: Sequence[uuid.UUID]) -> None:
    """Forget erased members' states of purged alerts."""
    if alert_ids:
        session.execute(delete(ErasedResponse).where(ErasedResponse.alert_id.in_(list(alert_ids))))
