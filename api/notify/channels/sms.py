"""SMS channel: the message text form-POSTed to a Twilio-compatible gateway (Messages.json)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from api.notify.channels.http import HttpPoster, check_http_response
from api.notify.channels.message import DELIVERY_HEADER, USER_AGENT, Message
from api.notify.errors import PermanentDeliveryError
from api.settings import Settings

# Twilio concatenates up to 1600 characters into one message.
SMS_MAX_CHARS = 1600


# Every alert SMS ends with how to answer it by SMS (POST /v1/sms/inbound reads the reply).
SMS_REPLY_HINT = "Reply 1 to go, 2 if you can't"


def sms_text(message: Message) -> str:
    """The SMS body: the text within SMS_MAX_CHARS; an alert's always ends with SMS_REPLY_HINT."""
    if message.kind != "alert":
        return message.text[:SMS_MAX_CHARS]
    room = SMS_MAX_CHARS - len(SMS_REPLY_HINT) - 1
    return f"{message.text[:room]}\n{SMS_REPLY_HINT}"


class SmsChannel:
    """Form-POSTs the message text to a Twilio-compatible gateway (Messages.json)."""

    name = "sms"

    def __init__(self, settings: Settings, poster: HttpPoster) -> None:
        self._settings = settings
        self._poster = poster
        credentials = f"{settings.sms_account_sid}:{settings.sms_auth_token.get_secret_value()}"
        self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()

    async def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
        settings = self._settings
        if not settings.sms_base_url:
            msg = "no SMS gateway is configured (ERN_SMS_BASE_URL is unset)"
            raise PermanentDeliveryError(msg)
        phone = contact.get("phone")
        if not phone:
            msg = "the member has no phone number any more"
            raise PermanentDeliveryError(msg)
        sid = settings.sms_account_sid
        url = f"{settings.sms_base_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        form = {"To": str(phone), "From": settings.sms_from, "Body": sms_text(message)}
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
            "Authorization": self._authorization,
            DELIVERY_HEADER: message.delivery_id,
        }
        body = urlencode(form).encode()
        answer = await self._poster.post(url, what="SMS gateway", headers=headers, body=body)
        check_http_response(answer, what="SMS gateway", now=now)
