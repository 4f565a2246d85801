"""Members, their scheduled zones and routes, API tokens and the append-only audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    Text,
    Time,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.database import Base

ROLES = ("responder", "defense", "coordinator")
# Roles whose members are ranked for alerts and therefore need a home zone to be placed.
FIELD_ROLES = ("responder", "defense")
MODES = ("walk", "bike", "drive")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Member(Base):
    """A member of the network; coordinators are members with the coordinator role."""

    __tablename__ = "member"
    __table_args__ = (
        CheckConstraint(f"roles <@ ARRAY[{_sql_list(ROLES)}]::text[]", name="roles_known"),
        CheckConstraint(f"mode IN ({_sql_list(MODES)})", name="mode_known"),
        CheckConstraint("speed_mps IS NULL OR speed_mps > 0", name="speed_positive"),
        # Coordinator-only accounts (e.g. made by `ern admin create-coordinator`) may have no
        # home zone; anyone who can be sent to an alert must have one.
        CheckConstraint(
            f"home_zone IS NOT NULL OR NOT (roles && ARRAY[{_sql_list(FIELD_ROLES)}]::text[])",
            name="home_zone_for_field_roles",
        ),
        CheckConstraint("home_zone IS NULL OR ST_IsValid(home_zone)", name="home_zone_valid"),
        CheckConstraint("(quiet_start IS NULL) = (quiet_end IS NULL)", name="quiet_pair"),
        CheckConstraint("quiet_start IS NULL OR quiet_start <> quiet_end", name="quiet_nonempty"),
        CheckConstraint(
            "share_with_group <@ ARRAY['email', 'phone']::text[]", name="share_with_group_known"
        ),
        Index("ix_member_home_zone", "home_zone", postgresql_using="gist"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    handle: Mapped[str] = mapped_column(Text, unique=True)
    roles: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default=text("'{}'::text[]")
    )
    mode: Mapped[str] = mapped_column(Text, default="walk", server_default="walk")
    speed_mps: Mapped[float | None] = mapped_column(Float)
    home_zone: Mapped[Any | None] = mapped_column(
        Geometry("POLYGON", srid=4326, spatial_index=False), nullable=True
    )
    available: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    quiet_start: Mapped[time | None] = mapped_column(Time)
    quiet_end: Mapped[time | None] = mapped_column(Time)
    contact_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Keyed HMAC of the contact's phone number (crypto.phone_index): SMS replies find the member.
    phone_index: Mapped[bytes | None] = mapped_column(LargeBinary, index=True)
    # No alerts until then (UTC); a past time means the snooze has ended by itself.
    snoozed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Contact channels the member lets its buddy group see on the roster: "email", "phone".
    share_with_group: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default=text("'{}'::text[]")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    zones: Mapped[list[MemberZone]] = relationship(
        back_populates="member",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="MemberZone.name",
        lazy="selectin",
    )
    routes: Mapped[list[MemberRoute]] = relationship(
        back_populates="member",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="MemberRoute.start_time",
        lazy="selectin",
    )

    def has_role(self, role: str) -> bool:
        """Whether the member holds ``role``."""
        return role in (self.roles or ())


class MemberZone(Base):
    """A scheduled zone: where the member usually is on some days between two local times."""

    __tablename__ = "member_zone"
    __table_args__ = (
        CheckConstraint("ST_IsValid(area)", name="area_valid"),
        CheckConstraint(f"days <@ ARRAY[{_sql_list(DAYS)}]::text[]", name="days_known"),
        CheckConstraint("cardinality(days) > 0", name="days_nonempty"),
        CheckConstraint("start_time <> end_time", name="window_nonempty"),
        Index("ix_member_zone_area", "area", postgresql_using="gist"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    member_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("member.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(Text)
    area: Mapped[Any] = mapped_column(Geometry("POLYGON", srid=4326, spatial_index=False))
    days: Mapped[list[str]] = mapped_column(ARRAY(Text))
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)

    member: Mapped[Member] = relationship(back_populates="zones")


class MemberRoute(Base):
    """A regular journey: a path travelled on some days within a local time window."""

    __tablename__ = "member_route"
    __table_args__ = (
        CheckConstraint("ST_IsValid(path)", name="path_valid"),
        CheckConstraint(f"days <@ ARRAY[{_sql_list(DAYS)}]::text[]", name="days_known"),
        CheckConstraint("cardinality(days) > 0", name="days_nonempty"),
        CheckConstraint("start_time <> end_time", name="window_nonempty"),
        CheckConstraint(f"mode IS NULL OR mode IN ({_sql_list(MODES)})", name="mode_known"),
        Index("ix_member_route_path", "path", postgresql_using="gist"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    member_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("member.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[Any] = mapped_column(Geometry("LINESTRING", srid=4326, spatial_index=False))
    days: Mapped[list[str]] = mapped_column(ARRAY(Text))
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)
    mode: Mapped[str | None] = mapped_column(Text)

    member: Mapped[Member] = relationship(back_populates="routes")


class ApiToken(Base):
    """A bearer token, stored only as the SHA-256 of its text."""

    __tablename__ = "api_token"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    member_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("member.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """Who read or changed whose record, and when (UTC); rows are never updated or deleted."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    # No foreign keys: the history outlives the members it names.
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    subject_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    action: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
