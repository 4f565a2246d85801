"""The notification outbox: one row per (alert, member, channel, message kind)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base

CHANNELS = ("webhook", "email", "sms")
STATES = ("pending", "sending", "sent", "failed", "cancelled")
# Rows the worker may pick: due pending rows, and sending rows whose lease has run out.
DUE_STATES = ("pending", "sending")


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# The partial index's predicate; the worker's pick says the same, with constants, so that
# its prepared (generic) plan can use the index.
DUE_PREDICATE = f"outbox.state IN ({_sql_list(DUE_STATES)})"


class Delivery(Base):
    """One message to one member over one channel; the destination is resolved when sending."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(f"channel IN ({_sql_list(CHANNELS)})", name="channel_known"),
        CheckConstraint(f"state IN ({_sql_list(STATES)})", name="state_known"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        CheckConstraint("(state = 'sent') = (sent_at IS NOT NULL)", name="sent_at_iff_sent"),
        # The worker's pick: due rows in next_attempt_at order; finished rows stay out of the index.
        Index(
            "ix_outbox_due",
            "next_attempt_at",
            postgresql_where=text(f"state IN ({_sql_list(DUE_STATES)})"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    # f"{alert_id}:{member_id}:{channel}:{message_kind}"; sent to receivers so they drop duplicates.
    delivery_id: Mapped[str] = mapped_column(Text, unique=True)
    # No foreign key: the alerts migration comes later and may add one.
    alert_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    # Cascade: a member who leaves takes their queued and past messages with them (privacy first).
    member_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("member.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(Text)
    message_kind: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(Text, default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
