"""Who may see an alert and as whom, and the view of it each party gets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from api.alerts import repository as repo
from api.alerts.errors import AlertNotFound
from api.alerts.facts import lonlat
from api.alerts.models import NOTIFIED_STATES, Alert, AlertResponder
from api.alerts.schemas import (
    AcceptedResponder,
    AlertCoordinatorView,
    AlertRequesterView,
    AlertResponderView,
    AlertView,
    ResponderRow,
    rounded_eta_s,
)
from api.members.auth import HasRoles, is_coordinator
from api.members.models import Member
from api.members.service import audit
from api.types import Point

Party = Literal["coordinator", "requester", "responder"]


@dataclass(frozen=True)
class AlertAccess:
    """An alert the caller may see, and as whom."""

    alert: Alert
    party: Party
    caller: Member


def visible_alert(session: Session, alert_id: uuid.UUID, caller: Member) -> AlertAccess:
    """The alert if the caller may see it (coordinator, requester, or notified member); else 404."""
    alert = repo.get_alert(session, alert_id)
    if alert is not None:
        if is_coordinator(caller):
            return AlertAccess(alert=alert, party="coordinator", caller=caller)
        if alert.requester_id == caller.id:
            return AlertAccess(alert=alert, party="requester", caller=caller)
        row = repo.responder(session, alert_id, caller.id)
        if row is not None and row.state in NOTIFIED_STATES:
            return AlertAccess(alert=alert, party="responder", caller=caller)
    msg = f"alert {alert_id} not found"
    raise AlertNotFound(msg)


def read_alert(session: Session, access: AlertAccess) -> AlertView:
    """The caller's view; a coordinator's read of someone else's alert is audited."""
    if access.party == "coordinator":
        audit(session, access.caller, access.alert.requester_id, f"alert.read:{access.alert.id}")
    return view_for(session, access)


def view_for(session: Session, access: AlertAccess) -> AlertView:
    """The view of the alert its party is entitled to."""
    if access.party == "coordinator":
        return coordinator_view(session, access.alert)
    if access.party == "requester":
        return requester_view(session, access.alert)
    row = repo.responder(session, access.alert.id, access.caller.id)
    assert row is not None
    return responder_view(session, access.alert, row)


def _accepted(rows: list[tuple[AlertResponder, str]]) -> list[AcceptedResponder]:
    accepted = sorted((r.eta_s, r.position, h) for r, h in rows if r.state == "accepted")
    return [AcceptedResponder(handle=h, eta_s=rounded_eta_s(eta)) for eta, _, h in accepted]


def _common_fields(alert: Alert) -> dict[str, Any]:
    """What the requester's and the coordinators' views both show."""
    lon, lat = lonlat(alert)
    return {
        "id": alert.id,
        "status": alert.status,
        "kind": alert.kind,
        "ranking": alert.ranking,
        "needed": alert.needed,
        "note": alert.note,
        "location": Point(type="Point", coordinates=(lon, lat)),
        "exercise": alert.exercise,
        "created_at": alert.created_at,
        "closed_at": alert.closed_at,
    }


def requester_view(session: Session, alert: Alert) -> AlertRequesterView:
    """Status, how many were notified, who accepted (rounded ETAs); nothing about anyone else."""
    rows = repo.responders_with_handles(session, alert.id, states=("accepted",))
    return AlertRequesterView(
        **_common_fields(alert),
        notified_count=repo.count_in_states(session, alert.id, NOTIFIED_STATES)
        + repo.erased_count(session, alert.id, NOTIFIED_STATES),
        accepted=_accepted(rows),
    )


def responder_view(session: Session, alert: Alert, row: AlertResponder) -> AlertResponderView:
    """Where, what, who asked, and the member's own state and rounded ETA."""
    lon, lat = lonlat(alert)
    return AlertResponderView(
        id=alert.id,
        status=alert.status,  # type: ignore[arg-type]
        kind=alert.kind,  # type: ignore[arg-type]
        location=Point(type="Point", coordinates=(lon, lat)),
        note=alert.note,
        requester_handle=repo.handle_of(session, alert.requester_id),
        state=row.state,  # type: ignore[arg-type]
        eta_s=rounded_eta_s(row.eta_s),
        created_at=alert.created_at,
    )


def coordinator_view(session: Session, alert: Alert) -> AlertCoordinatorView:
    """Everything, with the ranked list best first and exact ETAs."""
    rows = repo.responders_with_handles(session, alert.id)
    return AlertCoordinatorView(
        **_common_fields(alert),
        notified_count=sum(1 for r, _ in rows if r.state in NOTIFIED_STATES)
        + repo.erased_count(session, alert.id, NOTIFIED_STATES),
        accepted=_accepted(rows),
        requester_id=alert.requester_id,
        requester_handle=repo.handle_of(session, alert.requester_id),
        presence_at=alert.presence_at,
        wave=alert.wave,
        next_wave_at=alert.next_wave_at,
        fulfilled_at=alert.fulfilled_at,
        responders=[
            ResponderRow(member_id=r.member_id, handle=h, eta_s=r.eta_s, wave=r.wave, state=r.state)  # type: ignore[arg-type]
            for r, h in rows
        ],
    )


def view_as_creator(session: Session, alert: Alert, requester: HasRoles) -> AlertView:
    """The answer to POST /v1/alerts: the requester's view, or the full one for a coordinator."""
    if is_coordinator(requester):
        return coordinator_view(session, alert)
    return requester_view(session, alert)
