"""Alert answers by SMS: Twilio's request signature, the reply grammar, and the TwiML answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from xml.sax.saxutils import escape

from sqlalchemy.orm import Session

from api.alerts.answers import respond
from api.alerts.errors import AlertClosed, StoodDown
from api.alerts.facts import lonlat
from api.alerts.messages import location_text
from api.members.crypto import phone_index
from api.presence.service import snooze_until_resumed
from api.settings import Settings
from api.sms import repository as repo
from api.sms.errors import BadSignature

ACCEPT = frozenset({"1", "yes", "y", "ok"})
DECLINE = frozenset({"2", "no", "n"})
STOP = frozenset({"stop"})

NOT_A_MEMBER = "ern: no member can answer alerts from this number."
NOTHING = "ern: nothing to answer, no alert is waiting for your reply."
CLOSED = "ern: that alert is closed. Thank you."
DECLINED = "ern: declined. Thank you, you are not expected."
STOOD_DOWN = "ern: enough people are on their way already; you are not needed. Thank you."
STOPPED = "ern: alerts paused until you resume them in the app."
UNKNOWN = "ern: reply 1 to go, 2 if you can't, or STOP to pause alerts."


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """X-Twilio-Signature as Twilio computes it.

    base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value, names sorted)),
    values of a repeated name sorted too (as Twilio's own validators do).
    """
    data = url
    for name in sorted({k for k, _ in params}):
        for value in sorted({v for k, v in params if k == name}):
            data += name + value
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_url(settings: Settings, *, request_url: str, path: str, query: str) -> str:
    """The URL Twilio signed: ERN_PUBLIC_URL + path (+ query) when set, else the request's."""
    if settings.public_url is None:
        return request_url
    url = str(settings.public_url).rstrip("/") + path
    return f"{url}?{query}" if query else url


def check_signature(
    settings: Settings, *, url: str, params: Sequence[tuple[str, str]], signature: str | None
) -> None:
    """BadSignature (403) unless ``signature`` is Twilio's for this URL and form."""
    token = settings.sms_auth_token.get_secret_value()
    if not token or not signature:
        msg = "missing X-Twilio-Signature (or ERN_SMS_AUTH_TOKEN unset)"
        raise BadSignature(msg)
    expected = twilio_signature(token, url, params)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        msg = "X-Twilio-Signature does not match"
        raise BadSignature(msg)


def twiml(text: str | None) -> str:
    """A TwiML answer that replies ``text`` to the sender; None: an empty answer (no reply)."""
    head = '<?xml version="1.0" encoding="UTF-8"?>'
    if text is None:
        return f"{head}<Response/>"
    return f"{head}<Response><Message>{escape(text)}</Message></Response>"


# Twilio's MessageSids are "SM"/"MM" + 32 hex digits; other gateways' differ, so only a bound.
MAX_SID_CHARS = 64


def inbound_message(form: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(sid, sender, body) of a form that is an inbound message; None for one that is not.

    A form without a usable MessageSid cannot be answered once only, and one without a From
    has no one to reply to: both get an empty answer. Twilio's other fields (FromCity,
    NumMedia, AddOns, ...) are normal and ignored; a missing Body is an empty one.
    """
    sid = form.get("MessageSid", "")
    sender = form.get("From", "").strip()
    if not sid or len(sid) > MAX_SID_CHARS or not sid.isprintable() or not sender:
        return None
    return sid, sender, form.get("Body", "")


def handle_reply(
    session: Session, settings: Settings, *, sender: str, body: str, sid: str, now: datetime
) -> str:
    """Act on one inbound SMS once per MessageSid; the reply text (a retry gets the same one)."""
    previous = repo.claim_sid(session, sid, now=now)
    if previous is not None:
        return previous
    reply = _act(session, settings, sender=sender, body=body, now=now)
    repo.store_reply(session, sid, reply)
    return reply


def _act(session: Session, settings: Settings, *, sender: str, body: str, now: datetime) -> str:
    index = phone_index(settings, sender)
    member = repo.member_by_phone_index(session, index) if index else None
    if member is None:
        return NOT_A_MEMBER
    word = " ".join(body.split()).lower().rstrip(".!")
    if word in STOP:
        snooze_until_resumed(session, member_id=member.id)
        return STOPPED
    if word not in ACCEPT | DECLINE:
        return UNKNOWN
    found = repo.newest_notification(session, member.id)
    if found is None:
        return NOTHING
    _, alert = found
    if alert.status == "closed":
        return CLOSED
    answer = "accept" if word in ACCEPT else "decline"
    try:
        respond(session, settings, alert_id=alert.id, member=member, answer=answer, now=now)
    except AlertClosed:
        return CLOSED
    except StoodDown:
        return STOOD_DOWN
    if answer == "decline":
        return DECLINED
    lon, lat = lonlat(alert)
    return f"ern: accepted, thank you. Go to {location_text(lon=lon, lat=lat)}."
