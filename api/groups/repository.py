"""All SQL of buddy groups: the members to group, proposals, published groups, memberships."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Uuid, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session, load_only, raiseload

from api.groups.models import BuddyGroup, BuddyGroupMember, GroupProposal
from api.members.models import Member, MemberRoute


def _among(column: Any, ids: Sequence[uuid.UUID]) -> Any:
    # One array parameter: an IN list of 10,000 parameters costs more to send and plan.
    return column == func.any_(array(ids, type_=Uuid))


# pg_advisory_xact_lock key of every change to published groups (publish, manual moves):
# two publishes, or a publish and a move, never interleave. "ern-grp" in ASCII.
PUBLISH_LOCK_KEY = 0x65726E2D677270


def population(session: Session, mode: str) -> Sequence[Any]:
    """Members of ``mode``: id, roles, home-zone centre lon/lat (null without a home zone)."""
    centre = func.ST_Centroid(Member.home_zone)
    return session.execute(
        select(Member.id, Member.roles, func.ST_X(centre), func.ST_Y(centre))
        .where(Member.mode == mode)
        .order_by(Member.id)
    ).all()


def route_rows(session: Session, mode: str) -> Sequence[Any]:
    """Routes travelled in ``mode`` by members of ``mode``: id, member, path WKB, days, window."""
    return session.execute(
        select(
            MemberRoute.id,
            MemberRoute.member_id,
            func.ST_AsBinary(MemberRoute.path),
            MemberRoute.days,
            MemberRoute.start_time,
            MemberRoute.end_time,
        )
        .join(Member, Member.id == MemberRoute.member_id)
        .where(Member.mode == mode, func.coalesce(MemberRoute.mode, Member.mode) == mode)
        .order_by(MemberRoute.member_id, MemberRoute.id)
    ).all()


def lock_groups(session: Session) -> None:
    """Serialise changes to published groups until the transaction ends."""
    session.execute(select(func.pg_advisory_xact_lock(PUBLISH_LOCK_KEY)))


def add_proposal(session: Session, proposal: GroupProposal) -> None:
    """Store a proposal."""
    session.add(proposal)
    session.flush()


def get_proposal(
    session: Session, proposal_id: uuid.UUID, *, lock: bool = True
) -> GroupProposal | None:
    """The proposal, read afresh; ``lock``: locked until commit (a publish holds it)."""
    stmt = select(GroupProposal).where(GroupProposal.id == proposal_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt.execution_options(populate_existing=True)).one_or_none()


def lock_members(session: Session, member_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """Hold members until commit (FOR KEY SHARE: no deletion meanwhile, in id order).

    Those still there: id -> (id, handle, mode, roles).
    """
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Member.id, Member.handle, Member.mode, Member.roles)
        .where(_among(Member.id, ids))
        .order_by(Member.id)
        .with_for_update(read=True, key_share=True)
    ).all()
    return {row[0]: row for row in rows}


def members_by_id(session: Session, member_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Member]:
    """Member records with only id, handle and contact loaded (what the outbox needs)."""
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    stmt = (
        select(Member)
        .where(_among(Member.id, ids))
        .options(
            load_only(Member.id, Member.handle, Member.contact_ciphertext, raiseload=True),
            raiseload(Member.zones),
            raiseload(Member.routes),
        )
    )
    return {m.id: m for m in session.scalars(stmt)}


def roster_rows(session: Session, member_ids: Iterable[uuid.UUID]) -> Sequence[Any]:
    """id, handle, share_with_group and encrypted contact of each member, by handle."""
    ids = sorted(set(member_ids))
    if not ids:
        return []
    return session.execute(
        select(Member.id, Member.handle, Member.share_with_group, Member.contact_ciphertext)
        .where(_among(Member.id, ids))
        .order_by(Member.handle)
    ).all()


def retire_current(session: Session, *, mode: str, now: datetime) -> list[uuid.UUID]:
    """Retire the current groups of ``mode`` (kept as history); their ids."""
    stmt = (
        update(BuddyGroup)
        .where(BuddyGroup.retired_at.is_(None), BuddyGroup.mode == mode)
        .values(retired_at=now)
        .returning(BuddyGroup.id)
    )
    return list(session.scalars(stmt))


def add_groups(session: Session, groups: Sequence[tuple[BuddyGroup, Sequence[uuid.UUID]]]) -> None:
    """Store published groups and their members (bulk INSERTs, no ORM unit of work)."""
    if not groups:
        return
    columns = ("id", "proposal_id", "position", "mode", "point_contact_id", "shared_minutes")
    rows = [
        {**{c: getattr(g, c) for c in columns}, "published_at": g.published_at, "retired_at": None}
        for g, _ in groups
    ]
    members = [{"group_id": g.id, "member_id": m} for g, ms in groups for m in ms]
    # executemany: psycopg batches the rows (multi-VALUES statements are slower to compile).
    session.execute(insert(BuddyGroup), rows)
    if members:
        session.execute(insert(BuddyGroupMember), members)


def add_memberships(session: Session, group_id: uuid.UUID, member_ids: Sequence[uuid.UUID]) -> None:
    """Put members into a group."""
    session.add_all(BuddyGroupMember(group_id=group_id, member_id=m) for m in member_ids)
    session.flush()


def leave_current(session: Session, member_ids: Sequence[uuid.UUID]) -> None:
    """Take the members out of every current group, of any mode (retired ones stay as they were).

    A member is in one current group at most: a move or a publish puts it there after this.
    """
    if not member_ids:
        return
    current = select(BuddyGroup.id).where(BuddyGroup.retired_at.is_(None))
    session.execute(
        delete(BuddyGroupMember)
        .where(_among(BuddyGroupMember.member_id, sorted(set(member_ids))))
        .where(BuddyGroupMember.group_id.in_(current))
        .execution_options(synchronize_session=False)
    )


def get_group(session: Session, group_id: uuid.UUID, *, lock: bool = False) -> BuddyGroup | None:
    """The group (current or retired)."""
    stmt = select(BuddyGroup).where(BuddyGroup.id == group_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def groups(
    session: Session,
    *,
    history: bool = False,
    mode: str | None = None,
    of_member: uuid.UUID | None = None,
) -> list[BuddyGroup]:
    """Published groups, newest publish first, in proposal order.

    ``history``: retired ones too; ``of_member``: only those it is in or the point contact of.
    """
    stmt = select(BuddyGroup)
    if not history:
        stmt = stmt.where(BuddyGroup.retired_at.is_(None))
    if mode is not None:
        stmt = stmt.where(BuddyGroup.mode == mode)
    if of_member is not None:
        member_of = select(BuddyGroupMember.group_id).where(BuddyGroupMember.member_id == of_member)
        stmt = stmt.where(
            or_(BuddyGroup.id.in_(member_of), BuddyGroup.point_contact_id == of_member)
        )
    stmt = stmt.order_by(BuddyGroup.published_at.desc(), BuddyGroup.position, BuddyGroup.id)
    return list(session.scalars(stmt))


def member_ids_of(session: Session, group_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """group id -> its members as (id, handle) pairs, by handle (code point order)."""
    ids = list(set(group_ids))
    out: dict[uuid.UUID, list[Any]] = {g: [] for g in ids}
    if not ids:
        return out
    rows = session.execute(
        select(BuddyGroupMember.group_id, Member.id, Member.handle)
        .join(Member, Member.id == BuddyGroupMember.member_id)
        .where(_among(BuddyGroupMember.group_id, ids))
    ).all()
    for group_id, member_id, handle in sorted(rows, key=lambda row: row[2]):
        out[group_id].append((member_id, handle))
    return out


def handles(session: Session, member_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """member id -> handle."""
    ids = list(set(member_ids))
    if not ids:
        return {}
    return dict(
        session.execute(select(Member.id, Member.handle).where(_among(Member.id, ids))).all()
    )
