"""Opt-in live locations, and the token that tells processes their presence cache is stale."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, SmallInteger, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class MemberLocation(Base):
    """A member's live location, valid from updated_at until expires_at (UTC)."""

    __tablename__ = "member_location"
    __table_args__ = (
        CheckConstraint("ST_IsValid(location)", name="location_valid"),
        CheckConstraint("expires_at > updated_at", name="expires_after_update"),
        Index("ix_member_location_expires_at", "expires_at"),
    )

    member_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("member.id", ondelete="CASCADE"), primary_key=True
    )
    location: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PresenceVersion(Base):
    """One row whose token changes (by trigger) with every write to members, zones or routes."""

    __tablename__ = "presence_version"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=1)
    token: Mapped[uuid.UUID] = mapped_column(Uuid)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
