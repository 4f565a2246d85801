"""All SQL of the presence domain: live locations, the presence version token, member snapshots."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from geoalchemy2.shape import from_shape
from shapely.geometry import Point as ShapelyPoint
from sqlalchemy import Row, bindparam, delete, func, literal, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.alerts.models import Alert, AlertResponder
from api.database import DriverStatement
from api.members.models import Member, MemberRoute, MemberZone
from api.presence.models import MemberLocation, PresenceVersion


def presence_token(session: Session) -> uuid.UUID | None:
    """The token that changes with every write to members, zones or routes."""
    return session.scalar(select(PresenceVersion.token).where(PresenceVersion.id == 1))


def member_rows(session: Session) -> Sequence[Row[Any]]:
    """Every available member with what ranking needs; home zone as WKB (None if absent).

    The encrypted contact comes next to last (the index keeps only which channels it has),
    then the end of the member's snooze (null: none).
    """
    return session.execute(
        select(
            Member.id,
            Member.handle,
            Member.roles,
            Member.mode,
            Member.speed_mps,
            Member.quiet_start,
            Member.quiet_end,
            func.ST_AsBinary(Member.home_zone),
            Member.contact_ciphertext,
            Member.snoozed_until,
        )
        .where(Member.available.is_(True))
        .order_by(Member.id)
    ).all()


def _windowed_rows(
    session: Session, model: type[MemberZone] | type[MemberRoute], geometry: Any
) -> Sequence[Row[Any]]:
    return session.execute(
        select(
            model.member_id,
            func.ST_AsBinary(geometry),
            model.days,
            model.start_time,
            model.end_time,
        )
        .join(Member, Member.id == model.member_id)
        .where(Member.available.is_(True))
    ).all()


def zone_rows(session: Session) -> Sequence[Row[Any]]:
    """Scheduled zones of available members: member id, area WKB, days, start, end."""
    return _windowed_rows(session, MemberZone, MemberZone.area)


def route_rows(session: Session) -> Sequence[Row[Any]]:
    """Routes of available members: member id, path WKB, days, start, end."""
    return _windowed_rows(session, MemberRoute, MemberRoute.path)


# Members who accepted an alert that is still open (fulfilled counts: it is not over).
_BUSY = (
    select(AlertResponder.member_id)
    .join(Alert, Alert.id == AlertResponder.alert_id)
    .where(AlertResponder.state == "accepted", Alert.status != "closed")
    .distinct()
)


# Every ranking runs it: on the driver connection (see DriverStatement), not through the ORM.
_BUSY_SQL = DriverStatement.of(_BUSY)


def busy_member_ids(session: Session) -> set[uuid.UUID]:
    """Members who have accepted an alert that is not closed: they are on their way already."""
    if session.autoflush:
        session.flush()  # what the ORM's query did first: pending answers count
    return {row[0] for row in _BUSY_SQL.rows(session, {})}


def snoozed_member_ids(session: Session, *, at: datetime) -> set[uuid.UUID]:
    """Members whose snooze covers ``at`` (a snooze ends by itself at ``snoozed_until``)."""
    return set(session.scalars(select(Member.id).where(Member.snoozed_until > at)))


# Built once: every alert runs these, and building a statement costs more than running it.
_LIVE_AT = select(
    MemberLocation.member_id,
    func.ST_X(MemberLocation.location).label("lon"),
    func.ST_Y(MemberLocation.location).label("lat"),
).where(MemberLocation.expires_at > bindparam("at"), MemberLocation.updated_at <= bindparam("at"))
_TOKEN_AND_LIVE = (
    select(
        select(PresenceVersion.token).where(PresenceVersion.id == 1).scalar_subquery(),
        (live := _LIVE_AT.subquery()).c.member_id,
        live.c.lon,
        live.c.lat,
    )
    # One row even without live locations: the token is always answered.
    .select_from(select(literal(1)).subquery().outerjoin(live, true()))
)
_TOKEN_AND_LIVE_SQL = DriverStatement.of(_TOKEN_AND_LIVE)


# The same three reads in one round trip for rankings that leave busy members out (every
# personal and defence alert): the row without a member carries the token and the busy
# members (an array), every other row is a live location.
_TOKEN_LIVE_AND_BUSY_SQL = DriverStatement.of(
    text(
        "SELECT (SELECT token FROM presence_version WHERE id = 1), CAST(NULL AS uuid),"
        " CAST(NULL AS double precision), CAST(NULL AS double precision),"
        " ARRAY(SELECT DISTINCT r.member_id FROM alert_responder AS r"
        " JOIN alert AS a ON a.id = r.alert_id WHERE r.state = 'accepted' AND a.status <> 'closed')"
        " UNION ALL SELECT NULL, member_id, ST_X(location), ST_Y(location), NULL"
        " FROM member_location WHERE expires_at > :at AND updated_at <= :at"
    )
)


def token_live_and_busy(
    session: Session, *, at: datetime
) -> tuple[uuid.UUID | None, list[tuple[uuid.UUID, float, float]], set[uuid.UUID]]:
    """token_and_live_locations() and busy_member_ids() in one round trip."""
    if session.autoflush:
        session.flush()  # what the ORM's query of busy members did first
    token: uuid.UUID | None = None
    busy: set[uuid.UUID] = set()
    found: list[tuple[uuid.UUID, float, float]] = []
    for head, member_id, lon, lat, busy_ids in _TOKEN_LIVE_AND_BUSY_SQL.rows(session, {"at": at}):
        if member_id is None:
            token, busy = head, set(busy_ids)
        else:
            found.append((member_id, float(lon), float(lat)))
    return token, found, busy


def live_locations(session: Session, *, at: datetime) -> Sequence[Row[Any]]:
    """Live locations valid at ``at``: member id, lon, lat."""
    return session.execute(_LIVE_AT, {"at": at}).all()


def token_and_live_locations(
    session: Session, *, at: datetime
) -> tuple[uuid.UUID | None, list[tuple[uuid.UUID, float, float]]]:
    """presence_token() and live_locations() in one round trip (every alert needs both)."""
    rows = _TOKEN_AND_LIVE_SQL.rows(session, {"at": at})
    found = [(r[1], float(r[2]), float(r[3])) for r in rows if r[1] is not None]
    return (rows[0][0] if rows else None), found


def get_location(session: Session, member_id: uuid.UUID) -> MemberLocation | None:
    """The member's live location row, or None."""
    return session.get(MemberLocation, member_id)


def put_location(
    session: Session,
    member_id: uuid.UUID,
    *,
    lon: float,
    lat: float,
    updated_at: datetime,
    expires_at: datetime,
) -> None:
    """Insert or replace the member's live location."""
    geom = from_shape(ShapelyPoint(lon, lat), srid=4326)
    values = {
        "member_id": member_id,
        "location": geom,
        "updated_at": updated_at,
        "expires_at": expires_at,
    }
    stmt = insert(MemberLocation).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[MemberLocation.member_id],
        set_={"location": geom, "updated_at": updated_at, "expires_at": expires_at},
    )
    session.execute(stmt)
    session.flush()


def delete_location(session: Session, member_id: uuid.UUID) -> bool:
    """Delete the member's live location; whether there was one."""
    result = session.execute(delete(MemberLocation).where(MemberLocation.member_id == member_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def purge_expired_locations(session: Session, *, now: datetime) -> int:
    """Delete live locations that expired before ``now``; how many."""
    result = session.execute(delete(MemberLocation).where(MemberLocation.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def set_snooze(session: Session, member_id: uuid.UUID, *, until: datetime | None) -> None:
    """Set (or with None clear) the member's snooze; the presence token changes with it."""
    session.execute(update(Member).where(Member.id == member_id).values(snoozed_until=until))
