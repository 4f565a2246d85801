"""Delivery channels, a module each (webhook.py, sms.py, email.py) and their HTTP poster."""

from __future__ import annotations

from api.notify.channels.email import EmailChannel, message_id
from api.notify.channels.http import (
    HttpAnswer,
    HttpPoster,
    check_http_response,
    http_tls_context,
    parse_retry_after,
    public_address,
)
from api.notify.channels.message import (
    DELIVERY_HEADER,
    MAX_ERROR_CHARS,
    USER_AGENT,
    Channel,
    Message,
    scrub,
)
from api.notify.channels.sms import SMS_MAX_CHARS, SMS_REPLY_HINT, SmsChannel, sms_text
from api.notify.channels.webhook import (
    SIGNATURE_HEADER,
    WebhookChannel,
    sign,
    verify_signature,
    webhook_body,
    webhook_signing_key,
)
from api.settings import Settings

__all__ = [
    "DELIVERY_HEADER",
    "MAX_ERROR_CHARS",
    "SIGNATURE_HEADER",
    "SMS_MAX_CHARS",
    "SMS_REPLY_HINT",
    "USER_AGENT",
    "Channel",
    "EmailChannel",
    "HttpAnswer",
    "HttpPoster",
    "Message",
    "SmsChannel",
    "WebhookChannel",
    "check_http_response",
    "http_tls_context",
    "make_channels",
    "message_id",
    "parse_retry_after",
    "public_address",
    "scrub",
    "sign",
    "sms_text",
    "verify_signature",
    "webhook_body",
    "webhook_signing_key",
]


def make_channels(settings: Settings, poster: HttpPoster) -> dict[str, Channel]:
    """Every channel by name, the HTTP ones sharing one poster."""
    channels: list[Channel] = [
        WebhookChannel(settings, poster),
        EmailChannel(settings),
        SmsChannel(settings, poster),
    ]
    return {channel.name: channel for channel in channels}
