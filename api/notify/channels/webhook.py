"""Webhook channel: the message as JSON POSTed to the member's URL, HMAC-signed per member."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from api.members.crypto import derive_key
from api.notify.channels.http import _MEMO_SIZE, HttpPoster, check_http_response
from api.notify.channels.message import DELIVERY_HEADER, USER_AGENT, Message
from api.notify.errors import PermanentDeliveryError
from api.settings import Settings

_WEBHOOK_KEY_INFO = b"ern webhook signature v1"
SIGNATURE_HEADER = "X-Ern-Signature"


def webhook_signing_key(settings: Settings, member_id: uuid.UUID) -> bytes:
    """One member's X-Ern-Signature key.

    HKDF-SHA256(ERN_SECRET_KEY, info="ern webhook signature v1:<member id>"): each member
    verifies with a key of their own (GET /v1/members/me/webhook-key), so no member can sign
    messages that another member's receiver would accept.
    """
    return _member_key(settings.secret_bytes(), member_id)


def _member_key(secret: bytes, member_id: uuid.UUID) -> bytes:
    return derive_key(secret, info=_WEBHOOK_KEY_INFO + b":" + str(member_id).encode())


def sign(key: bytes, body: bytes) -> str:
    """The X-Ern-Signature value of a body: "sha256=" + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, body: bytes, header: str | None) -> bool:
    """Whether an X-Ern-Signature header matches the raw body (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(key, body), header)


def webhook_body(message: Message, *, now: datetime) -> bytes:
    """The exact bytes POSTed to a webhook (and signed)."""
    document = {
        "delivery_id": message.delivery_id,
        "alert_id": str(message.alert_id),
        "kind": message.kind,
        "data": message.payload,
        "sent_at": now.isoformat(),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class WebhookChannel:
    """POSTs the message as signed JSON to the member's webhook_url."""

    name = "webhook"

    def __init__(self, settings: Settings, poster: HttpPoster) -> None:
        self._secret = settings.secret_bytes()
        self._poster = poster
        # HKDF per send was a tenth of a delivery's CPU; a member's key changes only with
        # ERN_SECRET_KEY, and a rotation restarts every process (docs/operations.md).
        self._keys: dict[uuid.UUID, bytes] = {}
        # Members choose webhook URLs; the operator chooses the SMS gateway's (trusted).
        self._public_only = not settings.webhook_allow_private

    async def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
        url = contact.get("webhook_url")
        if not url:
            msg = "the member has no webhook URL any more"
            raise PermanentDeliveryError(msg)
        if urlsplit(str(url)).scheme not in ("http", "https"):
            msg = "the member's webhook URL is not http(s)"
            raise PermanentDeliveryError(msg)
        body = webhook_body(message, now=now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self._key(message.member_id), body),
            DELIVERY_HEADER: message.delivery_id,
        }
        answer = await self._poster.post(
            str(url), what="webhook", headers=headers, body=body, public_only=self._public_only
        )
        check_http_response(answer, what="webhook", now=now)

    def _key(self, member_id: uuid.UUID) -> bytes:
        key = self._keys.get(member_id)
        if key is None:
            if len(self._keys) >= _MEMO_SIZE:
                self._keys.clear()
            key = self._keys[member_id] = _member_key(self._secret, member_id)
        return key
