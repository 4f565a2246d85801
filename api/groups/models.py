"""Buddy-group proposals, published groups (current and history), members, group texts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class GroupProposal(Base):
    """One `POST /v1/groups/build` answer, kept until published (or purged).

    ``answer`` is the contract body (member ids, quality report); publishing turns its groups
    into :class:`BuddyGroup` rows and sets ``published_at``.
    """

    __tablename__ = "group_proposal"
    __table_args__ = (Index("ix_group_proposal_created_at", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("member.id", ondelete="SET NULL")
    )
    mode: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    answer: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BuddyGroup(Base):
    """A published group; ``retired_at`` is set when a later publish replaces it (history)."""

    __tablename__ = "buddy_group"
    __table_args__ = (
        Index(
            "ix_buddy_group_current",
            "retired_at",
            postgresql_where=text("retired_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    proposal_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("group_proposal.id", ondelete="SET NULL"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # index of the group in its proposal
    mode: Mapped[str] = mapped_column(Text)
    point_contact_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("member.id", ondelete="SET NULL"), index=True
    )
    shared_minutes: Mapped[float] = mapped_column(Float)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BuddyGroupMember(Base):
    """Membership of a group (current or history); goes with the member on erasure."""

    __tablename__ = "buddy_group_member"

    group_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("buddy_group.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("member.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class GroupMessage(Base):
    """A group text by (sender, Idempotency-Key): its request hash and how many it went to."""

    __tablename__ = "group_message"
    __table_args__ = (
        UniqueConstraint(
            "group_id", "sender_id", "idempotency_key", name="uq_group_message_sender_key"
        ),
        Index("ix_group_message_group_created", "group_id", "created_at"),
        Index("ix_group_message_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    group_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("buddy_group.id", ondelete="CASCADE")
    )
    sender_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("member.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
