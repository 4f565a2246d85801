"""Errors of the inbound SMS webhook."""

from __future__ import annotations

from api.errors import Forbidden


class BadSignature(Forbidden):
    """X-Twilio-Signature is missing or does not match the request under ERN_SMS_AUTH_TOKEN."""
