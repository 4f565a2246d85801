"""The messages of an alert: the alert to members, stand-down and close notes, where to answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.alerts import repository as repo
from api.alerts.facts import AlertFacts
from api.alerts.models import Alert
from api.alerts.schemas import rounded_eta_s
from api.notify.service import enqueue_many
from api.settings import Settings
from api.types import Point


def notify_alert(
    session: Session,
    settings: Settings,
    *,
    alert: Alert,
    requester_handle: str | None,
    etas: dict[uuid.UUID, float],
    now: datetime,
) -> None:
    """Enqueue the alert message to members (their outbox rows join the caller's transaction)."""
    members = repo.members_by_id(session, etas)
    facts = AlertFacts.of(alert)
    messages = [
        (
            members[member_id],
            alert_payload(settings, facts, requester_handle=requester_handle, eta_s=eta_s),
        )
        for member_id, eta_s in etas.items()
        if member_id in members
    ]
    enqueue_many(
        session, settings, messages=messages, alert_id=alert.id, message_kind="alert", now=now
    )


def respond_url(settings: Settings, alert_id: uuid.UUID) -> str:
    """Where to answer an alert: absolute under ERN_PUBLIC_URL, else relative to the API."""
    path = f"/v1/alerts/{alert_id}/responses"
    if settings.public_url is None:
        return path
    return str(settings.public_url).rstrip("/") + path


def location_text(*, lon: float, lat: float) -> str:
    """An alert's place as messages show it: "(lat, lon): 60.17000, 24.94000" (about 1 m)."""
    return f"(lat, lon): {lat:.5f}, {lon:.5f}"


def alert_payload(
    settings: Settings, alert: AlertFacts, *, requester_handle: str | None, eta_s: float
) -> dict[str, Any]:
    """The message a notified member receives: where, what, who asked, and how to answer."""
    lon, lat = alert.lon, alert.lat
    who = f"@{requester_handle}" if requester_handle else "a member"
    minutes = max(1, round(eta_s / 60))
    text_lines = [
        f"ern {alert.kind} alert from {who}: {alert.needed} needed.",
        f"Location {location_text(lon=lon, lat=lat)}; about {minutes} min away for you.",
    ]
    if alert.note:
        text_lines.append(f"Note: {alert.note}")
    answer_at = respond_url(settings, alert.id)
    if settings.public_url is None:
        text_lines.append("Answer accept or decline in the app.")
    else:
        text_lines.append(f"Answer accept or decline in the app or at {answer_at}")
    return {
        "subject": f"ern alert: {alert.kind}, {alert.needed} needed",
        "text": "\n".join(text_lines),
        "alert": {
            "alert_id": str(alert.id),
            "kind": alert.kind,
            "location": Point(type="Point", coordinates=(lon, lat)).model_dump(mode="json"),
            "note": alert.note,
            "requester_handle": requester_handle,
            "needed": alert.needed,
            "eta_s": rounded_eta_s(eta_s),
            "respond_url": answer_at,
        },
    }


def _short_payload(settings: Settings, alert: Alert, kind: str) -> dict[str, Any]:
    if kind == "stand_down":
        subject = "ern: stand down, enough people are on their way"
        text_body = "Enough responders have accepted this alert. Thank you; you are not needed."
    else:
        subject = "ern: alert closed"
        text_body = "The alert has been closed. Thank you."
    return {
        "subject": subject,
        "text": text_body,
        "alert": {
            "alert_id": str(alert.id),
            "kind": alert.kind,
            "status": alert.status,
            "respond_url": respond_url(settings, alert.id),
        },
    }


def enqueue_short(
    session: Session,
    settings: Settings,
    *,
    alert: Alert,
    member_ids: list[uuid.UUID],
    message_kind: str,
    now: datetime,
) -> None:
    members = repo.members_by_id(session, member_ids)
    payload = _short_payload(settings, alert, message_kind)
    messages = [(members[m], payload) for m in member_ids if m in members]
    enqueue_many(
        session, settings, messages=messages, alert_id=alert.id, message_kind=message_kind, now=now
    )
