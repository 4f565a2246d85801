"""Response bodies of the notify domain: delivery state for coordinators, never destinations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["webhook", "email", "sms"]
State = Literal["pending", "sending", "sent", "failed", "cancelled"]


class DeliveryRead(BaseModel):
    """One outbox row: which member, which channel, how it went; no contact details, no payload."""

    model_config = ConfigDict(from_attributes=True)

    delivery_id: str
    alert_id: uuid.UUID
    member_id: uuid.UUID
    channel: Channel
    message_kind: str
    state: State
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class DeliveryPage(BaseModel):
    """One page of deliveries (newest first) and the total count."""

    items: list[DeliveryRead]
    total: int
    limit: int
    offset: int


class WebhookKey(BaseModel):
    """The key the caller's webhook receiver verifies X-Ern-Signature with."""

    key: str = Field(description="hex; keep it secret, like a password")
    algorithm: Literal["HMAC-SHA256"] = "HMAC-SHA256"
    header: Literal["X-Ern-Signature"] = "X-Ern-Signature"
    signature_format: str = Field(
        default="sha256=<hex HMAC of the raw request body under the key>",
        description="how the header's value is made",
    )
