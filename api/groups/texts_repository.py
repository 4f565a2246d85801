"""All SQL of group texts and buddies first: the current group, recipients, keys, rate, purge."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Text, bindparam, delete, func, literal, or_, select
from sqlalchemy.orm import Session, aliased, lazyload, load_only

from api.database import DriverStatement
from api.groups.models import BuddyGroup, BuddyGroupMember, GroupMessage, GroupProposal
from api.idempotency import claim as claim_key
from api.members.models import Member
from api.notify.models import Delivery

# The first key of the two-key advisory locks that serialise one group's texts (the one-key
# space is the alert raise's, per requester).
_TEXT_LOCK_SPACE = 0x67727478  # "grtx"


def lock_sender(session: Session, member_id: uuid.UUID) -> bool:
    """Hold the sender FOR KEY SHARE until commit; False if it was erased since it signed in.

    Taken first, as erasure takes the member row first: an erasure in progress is waited
    for, and the text then refused, not failed on the group_message row's foreign key.
    """
    stmt = (
        select(Member.id).where(Member.id == member_id).with_for_update(read=True, key_share=True)
    )
    return session.scalar(stmt) is not None


def lock_current_group(session: Session, group_id: uuid.UUID) -> BuddyGroup | None:
    """The current (unretired) group; its texts are counted one at a time until commit.

    The serialising lock is an advisory one, the row is held only FOR KEY SHARE: an erasure
    locks the member row first, then sets this row's point_contact_id to NULL, so a row
    lock taken here before the members' would deadlock with the erasure of the point contact.
    """
    key = int.from_bytes(group_id.bytes[:4], "big", signed=True)
    session.execute(select(func.pg_advisory_xact_lock(_TEXT_LOCK_SPACE, key)))
    stmt = (
        select(BuddyGroup)
        .where(BuddyGroup.id == group_id, BuddyGroup.retired_at.is_(None))
        .with_for_update(read=True, key_share=True)
    )
    return session.scalars(stmt).one_or_none()


def claim(
    session: Session,
    *,
    message_id: uuid.UUID,
    group_id: uuid.UUID,
    sender_id: uuid.UUID,
    key: str,
    request_hash: bytes,
    now: datetime,
) -> GroupMessage | None:
    """Insert the text's row; None if new, else the text this sender's key already made."""
    return claim_key(
        session,
        GroupMessage,
        constraint="uq_group_message_sender_key",
        values={
            "id": message_id,
            "group_id": group_id,
            "sender_id": sender_id,
            "idempotency_key": key,
            "request_hash": request_hash,
            "sent_count": 0,
            "created_at": now,
        },
        match=(
            GroupMessage.group_id == group_id,
            GroupMessage.sender_id == sender_id,
            GroupMessage.idempotency_key == key,
        ),
    )


def get(session: Session, message_id: uuid.UUID) -> GroupMessage:
    """A group text's row (one this transaction claimed)."""
    message = session.get(GroupMessage, message_id)
    assert message is not None
    return message


def sent_since(
    session: Session, group_id: uuid.UUID, *, since: datetime, other_than: uuid.UUID
) -> tuple[int, datetime | None]:
    """How many texts the group was sent after ``since`` (besides one), and the oldest's time."""
    stmt = select(func.count(), func.min(GroupMessage.created_at)).where(
        GroupMessage.group_id == group_id,
        GroupMessage.created_at > since,
        GroupMessage.id != other_than,
    )
    count, oldest = session.execute(stmt).one()
    return int(count), oldest


def lock_members_of(session: Session, group_id: uuid.UUID) -> None:
    """Hold the group's members and its point contact FOR KEY SHARE, in id order (the group
    itself unlocked: see lock_recipients for the list once it is)."""
    contact = select(BuddyGroup.point_contact_id).where(BuddyGroup.id == group_id)
    members = select(BuddyGroupMember.member_id).where(BuddyGroupMember.group_id == group_id)
    stmt = (
        select(Member.id)
        .where(or_(Member.id.in_(members), Member.id.in_(contact)))
        .order_by(Member.id)
        .with_for_update(read=True, key_share=True)
    )
    session.execute(stmt).all()


def lock_recipients(session: Session, group: BuddyGroup, *, exclude: uuid.UUID) -> list[Member]:
    """The group's members and its point contact (but ``exclude``), held FOR KEY SHARE.

    In id order, as api.alerts.repository.lock_members: an erasure in progress is waited
    for and its member left out, never deadlocked with.
    """
    members = select(BuddyGroupMember.member_id).where(BuddyGroupMember.group_id == group.id)
    stmt = (
        select(Member)
        .where(
            or_(Member.id.in_(members), Member.id == group.point_contact_id),
            Member.id != exclude,
        )
        .order_by(Member.id)
        .options(
            load_only(Member.id, Member.contact_ciphertext),
            lazyload(Member.zones),
            lazyload(Member.routes),
        )
        .with_for_update(read=True, key_share=True, of=Member)
    )
    return list(session.scalars(stmt))


_MINE = aliased(BuddyGroupMember)
_OTHER = aliased(BuddyGroupMember)
# Every member of the member's current group (one at most: publish and moves take a member out
# of any other; newest first all the same), one prepared round trip
# on the driver connection, as it runs for every personal alert.
_CURRENT_GROUP = (
    select(BuddyGroup.id, BuddyGroup.point_contact_id, _OTHER.member_id)
    .join(_MINE, _MINE.group_id == BuddyGroup.id)
    .join(_OTHER, _OTHER.group_id == BuddyGroup.id)
    .where(_MINE.member_id == bindparam("member_id"), BuddyGroup.retired_at.is_(None))
    .order_by(BuddyGroup.published_at.desc(), BuddyGroup.id)
)
_CURRENT_GROUP_SQL = DriverStatement.of(_CURRENT_GROUP)


def current_group_of(
    session: Session, member_id: uuid.UUID
) -> tuple[list[uuid.UUID], uuid.UUID | None] | None:
    """The member's current group: its other members and its point contact; None if none."""
    rows = _CURRENT_GROUP_SQL.rows(session, {"member_id": member_id})
    if not rows:
        return None
    group_id, contact_id = rows[0][0], rows[0][1]
    others = [m for g, _, m in rows if g == group_id and m != member_id]
    return others, contact_id


# --- retention -----------------------------------------------------------------------------


def _month(column: Any) -> Any:
    return func.date_trunc("month", func.timezone("UTC", column)).cast(Date)


def _unpublished_before(before: datetime) -> Any:
    return (GroupProposal.published_at.is_(None)) & (GroupProposal.created_at < before)


# Outbox kinds written by a publish (alert_id: the group's id): who is in a group with whom.
NOTICE_KINDS = ("group", "group_contact")


def _notices_before(before: datetime) -> Any:
    return Delivery.message_kind.in_(NOTICE_KINDS) & (Delivery.created_at < before)


def purge_counts(session: Session, *, before: datetime) -> list[tuple[date, str, str, int]]:
    """What purging before ``before`` removes: (month made, category, key, count).

    Categories: ``group_message`` (key ``text``), ``group_notification`` (key: channel),
    ``group_notice`` (publish notices, key: channel) and ``group_proposal`` (key
    ``unpublished``).
    """
    month = _month(GroupMessage.created_at)
    texts = (
        select(month, literal("group_message"), literal("text"), func.count())
        .where(GroupMessage.created_at < before)
        .group_by(month)
    )
    notifications = (
        select(month, literal("group_notification"), Delivery.channel, func.count())
        .join(GroupMessage, GroupMessage.id == Delivery.alert_id)
        .where(GroupMessage.created_at < before, Delivery.message_kind == "group_message")
        .group_by(month, Delivery.channel)
    )
    n_month = _month(Delivery.created_at)
    notices = (
        select(n_month, literal("group_notice"), Delivery.channel, func.count())
        .where(_notices_before(before))
        .group_by(n_month, Delivery.channel)
    )
    p_month = _month(GroupProposal.created_at)
    proposals = (
        select(p_month, literal("group_proposal"), literal("unpublished"), func.count())
        .where(_unpublished_before(before))
        .group_by(p_month)
    )
    rows = session.execute(texts.union_all(notifications, notices, proposals)).all()
    return sorted((m, c, k, int(n)) for m, c, k, n in rows)


def delete_messages_before(session: Session, *, before: datetime) -> list[uuid.UUID]:
    """Delete group texts made before ``before``; their ids (their outbox rows go with them)."""
    stmt = (
        delete(GroupMessage)
        .where(GroupMessage.created_at < before)
        .returning(GroupMessage.id)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(stmt))


def delete_notices_before(session: Session, *, before: datetime) -> int:
    """Delete the publish notices (kinds ``group``, ``group_contact``) queued before ``before``."""
    stmt = (
        delete(Delivery)
        .where(_notices_before(before))
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return len(session.scalars(stmt).all())


def delete_unpublished_proposals_before(session: Session, *, before: datetime) -> int:
    """Delete proposals never published and made before ``before``; how many."""
    stmt = delete(GroupProposal).where(_unpublished_before(before)).returning(GroupProposal.id)
    return len(session.scalars(stmt.execution_options(synchronize_session=False)).all())


# --- erasure -------------------------------------------------------------------------------


def proposals_naming(session: Session, member_id: uuid.UUID) -> list[GroupProposal]:
    """Proposals whose answer or parameters name the member, locked for the scrub."""
    needle = f"%{member_id}%"
    stmt = (
        select(GroupProposal)
        .where(
            or_(
                GroupProposal.answer.cast(Text()).like(needle),
                GroupProposal.params.cast(Text()).like(needle),
            )
        )
        .order_by(GroupProposal.id)
        .with_for_update()
    )
    return list(session.scalars(stmt))
