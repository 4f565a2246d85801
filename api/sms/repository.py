"""All SQL of inbound SMS: processed MessageSids, the member behind a number, their newest alert."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.alerts.models import NOTIFIED_STATES, Alert, AlertResponder
from api.members.models import Member
from api.sms.models import SmsInbound


def claim_sid(session: Session, sid: str, *, now: datetime) -> str | None:
    """Record ``sid`` as being processed; None if new, else the reply it already got.

    A concurrent first delivery of the same sid holds the row until it commits, so a
    retry waits for it and then reads its reply.
    """
    stmt = (
        insert(SmsInbound)
        .values(message_sid=sid, received_at=now, reply="")
        .on_conflict_do_nothing(index_elements=[SmsInbound.message_sid])
        .returning(SmsInbound.message_sid)
    )
    if session.execute(stmt).scalar_one_or_none() is not None:
        return None
    return session.scalar(select(SmsInbound.reply).where(SmsInbound.message_sid == sid)) or ""


def store_reply(session: Session, sid: str, reply: str) -> None:
    """The reply a processed sid got (what a retry is answered with)."""
    session.execute(update(SmsInbound).where(SmsInbound.message_sid == sid).values(reply=reply))


def purge_before(session: Session, *, before: datetime) -> int:
    """Forget sids received before ``before``; how many."""
    result = session.execute(delete(SmsInbound).where(SmsInbound.received_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]


def member_by_phone_index(session: Session, index: bytes) -> Member | None:
    """The member whose phone has this blind index (the newest, should two share a number)."""
    stmt = (
        select(Member)
        .where(Member.phone_index == index)
        .order_by(Member.created_at.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def newest_notification(
    session: Session, member_id: uuid.UUID
) -> tuple[AlertResponder, Alert] | None:
    """The member's most recently notified alert row and its alert, or None."""
    stmt = (
        select(AlertResponder, Alert)
        .join(Alert, Alert.id == AlertResponder.alert_id)
        .where(
            AlertResponder.member_id == member_id,
            AlertResponder.state.in_(NOTIFIED_STATES),
            Alert.exercise.is_(False),
        )
        .order_by(AlertResponder.notified_at.desc().nulls_last(), Alert.created_at.desc())
        .limit(1)
    )
    row = session.execute(stmt).first()
    return None if row is None else (row[0], row[1])
