"""Alert lifecycle: raise (idempotent, rate-limited, ranked, first wave), respond, close, views."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from geoalchemy2.shape import from_shape, to_shape
from shapely.geometry import Point as ShapelyPoint
from sqlalchemy.orm import Session

from api.alerts import repository as repo
from api.alerts.errors import (
    AlertClosed,
    AlertNotFound,
    CoordinatorOnly,
    IdempotencyKeyReused,
    NotAllowedToClose,
    RateLimited,
    StoodDown,
)
from api.alerts.models import NOTIFIED_STATES, Alert, AlertResponder
from api.alerts.schemas import (
    AcceptedResponder,
    AlertCoordinatorView,
    AlertCreate,
    AlertRequesterView,
    AlertResponderView,
    AlertView,
    ResponderRow,
    rounded_eta_s,
)
from api.graphs import GraphStore
from api.members.auth import is_coordinator
from api.members.models import Member
from api.members.service import audit
from api.notify.service import cancel, enqueue_many, purge
from api.presence.service import Ranking, check_in_service_area, rank_members
from api.settings import Settings
from api.types import Point

RATE_WINDOW = timedelta(hours=1)
# Retries come within seconds or minutes. A key seen again days later is a client reusing
# keys (e.g. a counter reset by a reinstall): answering with an old alert would silently
# swallow a new emergency, so past this window the key makes a new alert.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# Waves' worth of candidates ranked up front: escalation then needs no new search.
RESERVE_WAVES = 4
# Who a kind of alert goes to. Buddy groups (issue 5) do not exist yet: once they do, a
# personal alert also goes to the requester's group and its point contact, ahead of the ranking.
KIND_ROLES: dict[str, frozenset[str] | None] = {
    "personal": frozenset({"responder", "defense"}),
    "defense": frozenset({"defense"}),
    "mass": None,
}

Party = Literal["coordinator", "requester", "responder"]


@dataclass(frozen=True)
class AlertAccess:
    """An alert the caller may see, and as whom."""

    alert: Alert
    party: Party
    caller: Member


def request_hash(body: AlertCreate) -> bytes:
    """SHA-256 of the canonical request body (what an idempotent retry must repeat)."""
    data = body.model_dump(mode="json")
    if body.at is not None:
        data["at"] = body.at.astimezone(UTC).isoformat()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def first_wave_size(needed: int, settings: Settings) -> int:
    """ceil(needed / acceptance_rate): how many to notify to expect ``needed`` acceptances."""
    return math.ceil(needed / settings.acceptance_rate - 1e-9)


def lonlat(alert: Alert) -> tuple[float, float]:
    """The alert's (lon, lat)."""
    point = to_shape(alert.location)
    return float(point.x), float(point.y)


def create_alert(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    requester: Member,
    body: AlertCreate,
    idempotency_key: str,
    now: datetime,
) -> tuple[Alert, bool]:
    """Raise an alert, or return the one this key already made; True when it was created now."""
    coordinator = is_coordinator(requester)
    if (body.at is not None or body.exercise) and not coordinator:
        msg = "only coordinators may set `at` or `exercise`"
        raise CoordinatorOnly(msg)
    digest = request_hash(body)
    repo.lock_requester(session, requester.id)
    existing = _replay(session, requester.id, idempotency_key, digest, now=now)
    if existing is not None:
        return existing, False
    lon, lat = body.location.coordinates
    check_in_service_area(graphs, settings, lon=lon, lat=lat)
    if not (body.exercise and coordinator):
        _check_rate(session, settings, requester_id=requester.id, now=now)
    presence_at = (body.at or now).astimezone(UTC)
    alert_id = repo.insert_alert(
        session,
        {
            "id": uuid.uuid4(),
            "requester_id": requester.id,
            "idempotency_key": idempotency_key,
            "request_hash": digest,
            "kind": body.kind,
            "needed": body.needed,
            "note": body.note,
            "location": from_shape(ShapelyPoint(lon, lat), srid=4326),
            "presence_at": presence_at,
            "exercise": body.exercise,
            "status": "open",
            "ranking": "street_network",
            "wave": 0,
            "created_at": now,
        },
    )
    if alert_id is None:
        # A concurrent request with the same key committed first (the lock makes this rare).
        existing = _replay(session, requester.id, idempotency_key, digest, now=now)
        assert existing is not None
        return existing, False
    alert = repo.get_alert(session, alert_id)
    assert alert is not None
    ranking = _rank(session, graphs, settings, alert=alert, exclude=frozenset({requester.id}))
    alert.ranking = ranking.method
    _store_ranking(session, settings, alert=alert, ranking=ranking, requester=requester, now=now)
    session.flush()
    return alert, True


def _replay(
    session: Session, requester_id: uuid.UUID, key: str, digest: bytes, *, now: datetime
) -> Alert | None:
    existing = repo.find_by_key(session, requester_id, key)
    if existing is None:
        return None
    if existing.created_at <= now - IDEMPOTENCY_WINDOW:
        # Free the key for a new alert; the old one keeps it under a name no client sends.
        existing.idempotency_key = f"{key}#expired:{existing.id}"
        session.flush()
        return None
    if bytes(existing.request_hash) != digest:
        msg = "this Idempotency-Key was already used with a different request body"
        raise IdempotencyKeyReused(msg)
    return existing


def _check_rate(
    session: Session, settings: Settings, *, requester_id: uuid.UUID, now: datetime
) -> None:
    count, oldest = repo.recent_alerts(session, requester_id, since=now - RATE_WINDOW)
    if count >= settings.alerts_per_hour and oldest is not None:
        retry_after_s = max(1, math.ceil((oldest + RATE_WINDOW - now).total_seconds()))
        msg = f"at most {settings.alerts_per_hour} alerts an hour; retry in {retry_after_s} s"
        raise RateLimited(msg, retry_after_s=retry_after_s)


def _rank(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    alert: Alert,
    exclude: frozenset[uuid.UUID],
    at: datetime | None = None,
) -> Ranking:
    lon, lat = lonlat(alert)
    if alert.kind == "mass":
        limit = None
    else:
        limit = RESERVE_WAVES * first_wave_size(alert.needed, settings)
    return rank_members(
        session,
        graphs,
        settings,
        lon=lon,
        lat=lat,
        at=at or alert.presence_at,
        roles=KIND_ROLES[alert.kind],
        exclude=exclude,
        limit=limit,
        # Personal and defence alerts use the same outer bound as mass ones: nobody further
        # away than that is useful, and the waves take the nearest first anyway.
        max_eta_s=settings.mass_max_eta_s,
    )


def top_up_reserve(
    session: Session, graphs: GraphStore, settings: Settings, *, alert: Alert, now: datetime
) -> int:
    """Rank again, leaving out everyone already ranked, and add the newcomers to the reserve."""
    known = repo.ranked_member_ids(session, alert.id)
    exclude = frozenset(known) | ({alert.requester_id} if alert.requester_id else frozenset())
    # Presence moves on with the clock, also for drills evaluated at a chosen time.
    at = alert.presence_at + (now - alert.created_at)
    ranking = _rank(session, graphs, settings, alert=alert, exclude=exclude, at=at)
    start = len(known)
    rows = [
        {
            "alert_id": alert.id,
            "member_id": c.member_id,
            "position": start + i,
            "eta_s": float(c.eta_s),
            "mode": c.mode,
            "wave": None,
            "state": "ranked",
            "notified_at": None,
        }
        for i, c in enumerate(ranking.candidates)
    ]
    repo.insert_responders(session, rows)
    if ranking.method == "straight_line":
        alert.ranking = "straight_line"
    return len(rows)


def _store_ranking(
    session: Session,
    settings: Settings,
    *,
    alert: Alert,
    ranking: Ranking,
    requester: Member,
    now: datetime,
) -> None:
    candidates = ranking.candidates
    wave_size = len(candidates) if alert.kind == "mass" else first_wave_size(alert.needed, settings)
    first_state = "exercise" if alert.exercise else "notified"
    rows = [
        {
            "alert_id": alert.id,
            "member_id": c.member_id,
            "position": i,
            "eta_s": float(c.eta_s),
            "mode": c.mode,
            "wave": 1 if i < wave_size else None,
            "state": first_state if i < wave_size else "ranked",
            "notified_at": now if i < wave_size and not alert.exercise else None,
        }
        for i, c in enumerate(candidates)
    ]
    repo.insert_responders(session, rows)
    alert.wave = 1
    if not alert.exercise and alert.kind != "mass":
        # Even with an empty reserve: the worker may find people who came into reach since.
        alert.next_wave_at = now + timedelta(seconds=settings.wave_timeout_s)
    if not alert.exercise:
        first = candidates[:wave_size]
        etas = {c.member_id: float(c.eta_s) for c in first}
        notify_alert(
            session, settings, alert=alert, requester_handle=requester.handle, etas=etas, now=now
        )


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
    messages = [
        (members[member_id], alert_payload(alert, requester_handle=requester_handle, eta_s=eta_s))
        for member_id, eta_s in etas.items()
        if member_id in members
    ]
    enqueue_many(
        session, settings, messages=messages, alert_id=alert.id, message_kind="alert", now=now
    )


def alert_payload(alert: Alert, *, requester_handle: str | None, eta_s: float) -> dict[str, Any]:
    """The message a notified member receives: where, what, who asked, and how to answer."""
    lon, lat = lonlat(alert)
    who = f"@{requester_handle}" if requester_handle else "a member"
    minutes = max(1, round(eta_s / 60))
    text_lines = [
        f"ern {alert.kind} alert from {who}: {alert.needed} needed.",
        f"Location (lat, lon): {lat:.5f}, {lon:.5f}; about {minutes} min away for you.",
    ]
    if alert.note:
        text_lines.append(f"Note: {alert.note}")
    text_lines.append("Answer accept or decline in the app.")
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
            "respond_url": f"/v1/alerts/{alert.id}/responses",
        },
    }


def _short_payload(alert: Alert, kind: str) -> dict[str, Any]:
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
            "respond_url": f"/v1/alerts/{alert.id}/responses",
        },
    }


def _enqueue_short(
    session: Session,
    settings: Settings,
    *,
    alert: Alert,
    member_ids: list[uuid.UUID],
    message_kind: str,
    now: datetime,
) -> None:
    members = repo.members_by_id(session, member_ids)
    payload = _short_payload(alert, message_kind)
    messages = [(members[m], payload) for m in member_ids if m in members]
    enqueue_many(
        session, settings, messages=messages, alert_id=alert.id, message_kind=message_kind, now=now
    )


def fulfil(session: Session, settings: Settings, *, alert: Alert, now: datetime) -> None:
    """Enough accepted: no more waves; pending ones are stood down (mass alerts keep everyone)."""
    alert.status = "fulfilled"
    alert.fulfilled_at = now
    alert.next_wave_at = None
    if alert.kind == "mass":
        # A mass counter-presence has no head-count cap: nobody is told to stay away.
        return
    pending = repo.rows_in_states(session, alert.id, ("notified",))
    ids = [row.member_id for row in pending]
    repo.set_state(session, alert.id, ids, "stood_down")
    # An alert message still waiting in the outbox would only arrive to be countermanded.
    cancel(session, alert_id=alert.id, member_ids=ids, message_kind="alert")
    _enqueue_short(
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
    if row.state != target:
        if alert.status == "closed":
            msg = "the alert is closed"
            raise AlertClosed(msg)
        if target == "accepted" and row.state == "stood_down":
            msg = "enough responders accepted; you were stood down"
            raise StoodDown(msg)
        previous = row.state
        row.state = target
        row.responded_at = now
        session.flush()
        accepted = repo.count_in_states(session, alert.id, ("accepted",))
        if target == "accepted" and alert.status == "open" and accepted >= alert.needed:
            fulfil(session, settings, alert=alert, now=now)
        elif previous == "accepted" and alert.status == "fulfilled" and accepted < alert.needed:
            _reopen(session, alert=alert, now=now)
        session.flush()
    return responder_view(session, alert, row)


def _reopen(session: Session, *, alert: Alert, now: datetime) -> None:
    # Someone withdrew after the alert was fulfilled: look for more people at once.
    alert.status = "open"
    alert.fulfilled_at = None
    has_reserve = repo.count_in_states(session, alert.id, ("ranked",)) > 0
    alert.next_wave_at = now if has_reserve and alert.kind != "mass" else None


def close(session: Session, settings: Settings, *, access: AlertAccess, now: datetime) -> AlertView:
    """Close an alert (requester or coordinator): no more waves; everyone notified is told."""
    if access.party == "responder":
        msg = "only the requester or a coordinator may close an alert"
        raise NotAllowedToClose(msg)
    alert = repo.get_alert(session, access.alert.id, for_update=True)
    assert alert is not None
    if alert.status != "closed":
        alert.status = "closed"
        alert.closed_at = now
        alert.next_wave_at = None
        if not alert.exercise:
            cancel(session, alert_id=alert.id, member_ids=None, message_kind="alert")
            rows = repo.rows_in_states(session, alert.id, NOTIFIED_STATES)
            ids = [row.member_id for row in rows]
            # The requester hears of it too when a coordinator closes their alert.
            if alert.requester_id is not None and alert.requester_id != access.caller.id:
                ids.append(alert.requester_id)
            _enqueue_short(
                session, settings, alert=alert, member_ids=ids, message_kind="close", now=now
            )
        session.flush()
    return view_for(session, AlertAccess(alert=alert, party=access.party, caller=access.caller))


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
        notified_count=repo.count_in_states(session, alert.id, NOTIFIED_STATES),
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
        notified_count=sum(1 for r, _ in rows if r.state in NOTIFIED_STATES),
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


def view_as_creator(session: Session, alert: Alert, requester: Member) -> AlertView:
    """The answer to POST /v1/alerts: the requester's view, or the full one for a coordinator."""
    if is_coordinator(requester):
        return coordinator_view(session, alert)
    return requester_view(session, alert)


def purge_alerts(session: Session, *, before: datetime) -> int:
    """Forget alerts closed (never closed: raised) before ``before``, and their outbox rows."""
    ids = repo.delete_alerts_before(session, before=before)
    purge(session, alert_ids=ids)
    return len(ids)
