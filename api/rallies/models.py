"""Rallies sent, by (coordinator, Idempotency-Key): what a retry is answered with."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, LargeBinary, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class Rally(Base):
    """One rally notice: who sent it, the request's hash and how many it went to (never who)."""

    __tablename__ = "rally"
    __table_args__ = (
        UniqueConstraint("coordinator_id", "idempotency_key", name="uq_rally_coordinator_key"),
        Index("ix_rally_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    coordinator_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("member.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
