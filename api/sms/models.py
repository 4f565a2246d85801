"""Inbound SMS already processed, by the gateway's MessageSid (retries change nothing)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class SmsInbound(Base):
    """One processed inbound SMS and the reply it got; deleted after the alert retention."""

    __tablename__ = "sms_inbound"
    __table_args__ = (Index("ix_sms_inbound_received_at", "received_at"),)

    message_sid: Mapped[str] = mapped_column(Text, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reply: Mapped[str] = mapped_column(Text)
