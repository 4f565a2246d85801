"""Answers to an alert: accept or decline, fulfilment and stand-down, reopening, closing."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from api.alerts import repository as repo
from api.alerts.errors import AlertClosed, AlertNotFound, NotAllowedToClose, StoodDown
from api.alerts.messages import enqueue_short
from api.alerts.models import NOTIFIED_STATES, Alert
from api.alerts.schemas import AlertResponderView, AlertView
from api.alerts.views import AlertAccess, responder_view, view_for
from api.members.models import Member
from api.notify.service import cancel
from api.settings import Settings


def fulfil(session: Session, settings: Settings, *, alert: Alert, now: datetime) -> None:
    """Enough accepted: no more waves; pending ones are stood down (mass alerts keep everyone)."""
    alert.status = "fulfilled"
    alert.fulfilled_at = now
    alert.next_wave_at = None
    if alert.kind == "mass":
        # A mass counter-presence has no head-count cap: nobody is told to stay away.
        return
    pending = repo.rows_in_states(session, alert.id, ("notified",))
    # Members before their rows and outbox rows (see lock_members).
    present = repo.lock_members(session, [row.member_id for row in pending])
    ids = [row.member_id for row in pending if row.member_id in present]
    repo.set_state(session, alert.id, ids, "stood_down")
    # An alert message still waiting in the outbox would only arrive to be countermanded.
    cancel(session, alert_id=alert.id, member_ids=ids, message_kind="alert")
    enqueue_short(
        session, settings, alert=alert, member_ids=ids, message_kind="stand_down", now=now
    )


def respond(
    session: Session,
    settings: Settings,
    *,
    alert_id: uuid.UUID,
    member: Member,
    answer: str,
    now: datetime,
) -> AlertResponderView:
    """A notified member accepts or declines; repeating an answer changes nothing."""
    alert = repo.get_alert(session, alert_id, for_update=True)
    row = repo.responder(session, alert_id, member.id, for_update=True) if alert else None
    if alert is None or row is None or row.state not in NOTIFIED_STATES:
        msg = f"alert {alert_id} not found"
        raise AlertNotFound(msg)
    target = "accepted" if answer == "accept" else "declined"
    if target == "declined" and row.state == "stood_down":
        # Told to stay away already: the decline changes nothing, and the alert's record
        # keeps the stand-down (the answer's time is still noted).
        if row.responded_at is None:
            row.responded_at = now
            session.flush()
        return responder_view(session, alert, row)
    if row.state != target:
        if alert.status == "closed":
            msg = "the alert is closed"
            raise AlertClosed(msg)
        if target == "accepted" and row.state == "stood_down":
            msg = "enough responders accepted; you were stood down"
            raise StoodDown(msg)
        if target == "accepted" and alert.status == "fulfilled" and alert.kind != "mass":
            # Enough have accepted: a decline cannot be turned into an extra accept (a member
            # stood down could otherwise get around the stand-down by declining first).
            msg = "enough responders accepted"
            raise StoodDown(msg)
        previous = row.state
        row.state = target
        row.responded_at = now
        session.flush()
        accepted = repo.count_in_states(session, alert.id, ("accepted",))
        if target == "accepted" and alert.status == "open" and accepted >= alert.needed:
            fulfil(session, settings, alert=alert, now=now)
        elif previous == "accepted" and alert.status == "fulfilled" and accepted < alert.needed:
            _reopen(alert, now=now)
        session.flush()
    return responder_view(session, alert, row)


def _reopen(alert: Alert, *, now: datetime) -> None:
    # Someone withdrew after the alert was fulfilled: look for more people at once. Also with
    # an empty reserve: the worker ranks again for newcomers, as for any alert still short.
    alert.status = "open"
    alert.fulfilled_at = None
    alert.next_wave_at = None if alert.kind == "mass" else now


def close(session: Session, settings: Settings, *, access: AlertAccess, now: datetime) -> AlertView:
    """Close an alert (requester or coordinator): no more waves; everyone notified is told."""
    if access.party == "responder":
        msg = "only the requester or a coordinator may close an alert"
        raise NotAllowedToClose(msg)
    # The requester before the alert, as their account's deletion does (the member, then
    # requester_id set null on the alert): the close message to them needs the member.
    repo.lock_members(session, [access.alert.requester_id] if access.alert.requester_id else [])
    alert = repo.get_alert(session, access.alert.id, for_update=True)
    assert alert is not None
    if alert.status != "closed":
        alert.status = "closed"
        alert.closed_at = now
        alert.next_wave_at = None
        if not alert.exercise:
            rows = repo.rows_in_states(session, alert.id, NOTIFIED_STATES)
            # Members before their outbox rows (see lock_members).
            present = repo.lock_members(session, [row.member_id for row in rows])
            cancel(session, alert_id=alert.id, member_ids=None, message_kind="alert")
            ids = [row.member_id for row in rows if row.member_id in present]
            # The requester hears of it too when a coordinator closes their alert.
            if alert.requester_id is not None and alert.requester_id != access.caller.id:
                ids.append(alert.requester_id)
            enqueue_short(
                session, settings, alert=alert, member_ids=ids, message_kind="close", now=now
            )
        session.flush()
    return view_for(session, AlertAccess(alert=alert, party=access.party, caller=access.caller))
