"""Alert tables: the alert (with its escalation state) and its ranked responders."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base

KINDS = ("personal", "mass", "defense")
STATUSES = ("open", "fulfilled", "closed")
RANKINGS = ("street_network", "straight_line")
# ranked: in reserve, not notified; exercise: would have been notified (drill, nothing sent).
STATES = ("ranked", "notified", "accepted", "declined", "stood_down", "exercise")
# States of someone who really received the alert.
NOTIFIED_STATES = ("notified", "accepted", "declined", "stood_down")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Alert(Base):
    """One alert raised by a member; the escalation worker reads next_wave_at."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("requester_id", "idempotency_key", name="uq_alert_requester_key"),
        CheckConstraint(_in("kind", KINDS), name="kind"),
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(_in("ranking", RANKINGS), name="ranking"),
        CheckConstraint("needed >= 1", name="needed_positive"),
        CheckConstraint("ST_IsValid(location)", name="location_valid"),
        Index("ix_alert_requester_created", "requester_id", "created_at"),
        Index(
            "ix_alert_due",
            "next_wave_at",
            postgresql_where=text("status = 'open' AND next_wave_at IS NOT NULL"),
        ),
        Index("ix_alert_created_at", "created_at"),
        Index("ix_alert_location", "location", postgresql_using="gist"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # SET NULL: an alert's history outlives a deleted member.
    requester_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("member.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[str] = mapped_column(Text)
    needed: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    location: Mapped[WKBElement] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    presence_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exercise: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(Text, default="open")
    ranking: Mapped[str] = mapped_column(Text, default="street_network")
    wave: Mapped[int] = mapped_column(Integer, default=0)
    next_wave_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fulfilled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlertResponder(Base):
    """A ranked candidate of an alert: ETA, wave (null while in reserve) and state."""

    __tablename__ = "alert_responder"
    __table_args__ = (
        CheckConstraint(_in("state", STATES), name="state"),
        CheckConstraint("eta_s >= 0", name="eta_nonnegative"),
        Index("ix_alert_responder_member_id", "member_id"),
        # Busy members (accepted a still-open alert) are looked up for every ranking.
        Index(
            "ix_alert_responder_accepted",
            "member_id",
            postgresql_where=text("state = 'accepted'"),
        ),
        # Members' acceptance records (api.alerts.acceptance) read only answered rows.
        Index(
            "ix_alert_responder_outcome",
            "member_id",
            "alert_id",
            postgresql_include=["state"],
            postgresql_where=text("state IN ('notified', 'accepted', 'declined')"),
        ),
    )

    alert_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("alert.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("member.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer)
    eta_s: Mapped[float] = mapped_column(Float)
    mode: Mapped[str] = mapped_column(Text)
    wave: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text, default="ranked")
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PurgeCount(Base):
    """How much the retention pass removed, per month raised: statistics outlive the rows."""

    __tablename__ = "purge_count"

    # The month the purged alert was raised in (UTC), its first day.
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    # "alert" (key: kind) or "notification" (key: channel).
    category: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class ErasedResponse(Base):
    """The state an erased member had on an alert, without the member: counts survive erasure.

    No foreign key to alert (an insert would lock the alert row against the escalation worker,
    which locks an alert, then its members); the rows go with their alert at purge.
    """

    __tablename__ = "erased_response"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    state: Mapped[str] = mapped_column(Text)
