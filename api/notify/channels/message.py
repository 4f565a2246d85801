"""What one delivery attempt sends (Message), what a channel is, and errors fit to show."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

DELIVERY_HEADER = "X-Ern-Delivery"
USER_AGENT = "ern-notify/0.1"
MAX_ERROR_CHARS = 500

_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_NUMBER_RE = re.compile(r"\+?\d[\d ()-]{6,}\d")


@dataclass(frozen=True)
class Message:
    """What one attempt sends: the stable delivery id, the alert, the kind and the payload."""

    delivery_id: str
    alert_id: uuid.UUID
    member_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempt: int

    @property
    def subject(self) -> str:
        """The payload's subject, or a generic one."""
        return str(self.payload.get("subject") or f"ern: {self.kind}")

    @property
    def text(self) -> str:
        """The payload's plain text, or its JSON when it has none."""
        text = self.payload.get("text")
        return str(text) if text else json.dumps(self.payload, sort_keys=True)


class Channel(Protocol):
    """Sends one message to one destination; raises a DeliveryError on failure.

    Runs on the outbox worker's event loop: what blocks (SMTP) goes to the loop's executor.
    """

    name: str

    async def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None: ...


def scrub(text: str, *secrets: str | None) -> str:
    """An error text fit for coordinators: no destinations, e-mail addresses, URLs or numbers."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = _URL_RE.sub("<url>", text)
    text = _EMAIL_RE.sub("<email>", text)
    text = _NUMBER_RE.sub("<number>", text)
    return text[:MAX_ERROR_CHARS]
