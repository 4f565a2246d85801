"""Alert lifecycle: raise (idempotent, rate-limited, ranked, first wave), respond, close, views."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from geoalchemy2.shape import to_shape
from numpy.typing import NDArray
from sqlalchemy.orm import Session, sessionmaker

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
from api.clock import Clock
from api.database import transaction
from api.graphs import GraphStore
from api.groups.buddies import buddies_first
from api.members.auth import Caller, HasRoles, authenticate_caller, is_coordinator
from api.members.crypto import contact_cipher
from api.members.models import Member
from api.members.service import audit
from api.notify.service import cancel, delivery_id, enqueue_many, member_channels, purge
from api.presence.service import Candidate, Ranking, check_in_service_area, rank_members
from api.settings import Settings
from api.types import Point
from geo.acceptance import arrival_order, shrunk_rates, wave_size

RATE_WINDOW = timedelta(hours=1)
# Retries come within seconds or minutes. A key seen again days later is a client reusing
# keys (e.g. a counter reset by a reinstall): answering with an old alert would silently
# swallow a new emergency, so past this window the key makes a new alert.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# Waves' worth of candidates ranked up front: escalation then needs no new search.
RESERVE_WAVES = 4
# How far back a member's answers count for their acceptance probability.
HISTORY_WINDOW = timedelta(days=90)
# Who a kind of alert goes to; a personal alert also goes to the requester's buddy group and
# its point contact, ahead of the ranking (api.groups.buddies).
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


@dataclass(frozen=True)
class AlertFacts:
    """What an alert message says about the alert (known before the alert is stored)."""

    id: uuid.UUID
    kind: str
    needed: int
    note: str | None
    lon: float
    lat: float

    @classmethod
    def of(cls, alert: Alert) -> AlertFacts:
        """The facts of a stored alert."""
        lon, lat = lonlat(alert)
        return cls(
            id=alert.id, kind=alert.kind, needed=alert.needed, note=alert.note, lon=lon, lat=lat
        )


def request_hash(body: AlertCreate) -> bytes:
    """SHA-256 of the canonical request body (what an idempotent retry must repeat)."""
    data = body.model_dump(mode="json")
    if not body.include_busy:
        # Absent and false hash alike, and as they did before the field existed.
        del data["include_busy"]
    if body.at is not None:
        data["at"] = body.at.astimezone(UTC).isoformat()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def first_wave_size(needed: int, settings: Settings) -> int:
    """ceil(needed / acceptance_rate): how many to notify to expect ``needed`` acceptances."""
    return math.ceil(needed / settings.acceptance_rate - 1e-9)


def acceptance_probabilities(
    session: Session,
    settings: Settings,
    member_ids: Sequence[uuid.UUID],
    *,
    exercise: bool,
    now: datetime,
) -> NDArray[np.float64]:
    """Each member's chance to accept: own record of the last 90 days shrunk to the network's.

    Beta prior of weight ERN_ACCEPTANCE_PRIOR_N around the network's rate over the same
    alerts (ERN_ACCEPTANCE_RATE while the network has no history); exercises count only for
    exercises.
    """
    per, (net_accepted, net_notified) = repo.acceptance_history(
        session, member_ids, since=now - HISTORY_WINDOW, include_exercises=exercise
    )
    network = net_accepted / net_notified if net_notified else settings.acceptance_rate
    accepted = [per.get(m, (0, 0))[0] for m in member_ids]
    notified = [per.get(m, (0, 0))[1] for m in member_ids]
    return shrunk_rates(accepted, notified, prior_rate=network, prior_n=settings.acceptance_prior_n)


def arrival_ranking(
    session: Session,
    settings: Settings,
    candidates: list[Candidate],
    *,
    needed: int,
    exercise: bool,
    now: datetime,
) -> tuple[list[Candidate], int]:
    """Candidates in arrival order (geo.acceptance.arrival_order) and the first wave's size.

    The first wave is the smallest prefix with P(at least ``needed`` accept) >=
    ERN_WAVE_CONFIDENCE (Poisson-binomial), capped as before at ceil(needed /
    ERN_ACCEPTANCE_RATE) (and at everyone ranked): reliable members make it smaller,
    never larger.
    """
    if not candidates:
        return candidates, 0
    p = acceptance_probabilities(
        session, settings, [c.member_id for c in candidates], exercise=exercise, now=now
    )
    order = arrival_order([c.eta_s for c in candidates], p)
    ordered = [candidates[i] for i in order.tolist()]
    cap = first_wave_size(needed, settings)
    size = wave_size(p[order], needed, confidence=settings.wave_confidence, cap=cap)
    return ordered, max(1, size)


def lonlat(alert: Alert) -> tuple[float, float]:
    """The alert's (lon, lat)."""
    point = to_shape(alert.location)
    return float(point.x), float(point.y)


def create_alert(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    requester: Caller,
    body: AlertCreate,
    idempotency_key: str,
    now: datetime,
) -> tuple[AlertView, bool]:
    """Raise an alert, or answer with the one this key already made; True when created now.

    Ranking and the first wave's messages are prepared first (memory only); then one call of
    ``ern_raise_alert`` (migration 0005) checks idempotency and the rate limit under the
    requester's lock and stores the alert, its ranking and its outbox rows, or nothing.
    """
    coordinator = is_coordinator(requester)
    if (body.at is not None or body.exercise) and not coordinator:
        msg = "only coordinators may set `at` or `exercise`"
        raise CoordinatorOnly(msg)
    if body.include_busy and not coordinator:
        msg = "only coordinators may set `include_busy`"
        raise CoordinatorOnly(msg)
    lon, lat = body.location.coordinates
    check_in_service_area(graphs, settings, lon=lon, lat=lat)
    facts = AlertFacts(
        id=uuid.uuid4(), kind=body.kind, needed=body.needed, note=body.note, lon=lon, lat=lat
    )
    presence_at = (body.at or now).astimezone(UTC)
    ranking = _rank(
        session,
        graphs,
        settings,
        facts=facts,
        at=presence_at,
        exclude=frozenset({requester.id}),
        include_busy=body.include_busy,
    )
    candidates = ranking.candidates
    if body.kind == "mass":
        wave_size = len(candidates)
    else:
        candidates, wave_size = arrival_ranking(
            session, settings, candidates, needed=body.needed, exercise=body.exercise, now=now
        )
    if body.kind == "personal":
        candidates, wave_size = buddies_first(
            session,
            graphs,
            settings,
            requester_id=requester.id,
            lon=lon,
            lat=lat,
            at=presence_at,
            candidates=candidates,
            wave_size=wave_size,
        )
    first = candidates[:wave_size]
    deliveries = (
        [] if body.exercise else _first_wave(session, settings, facts, first, requester.handle)
    )
    live = not (body.exercise and coordinator)
    outcome = repo.raise_alert(
        session,
        repo.RaiseRequest(
            id=facts.id,
            requester_id=requester.id,
            idempotency_key=idempotency_key,
            request_hash=request_hash(body),
            kind=body.kind,
            needed=body.needed,
            note=body.note,
            lon=lon,
            lat=lat,
            presence_at=presence_at,
            exercise=body.exercise,
            ranking=ranking.method,
            now=now,
            # Even with an empty reserve: the worker may find people who came into reach since.
            next_wave_at=(
                None
                if body.exercise or body.kind == "mass"
                else now + timedelta(seconds=settings.wave_timeout_s)
            ),
            key_since=now - IDEMPOTENCY_WINDOW,
            rate_limit=settings.alerts_per_hour if live else None,
            rate_since=now - RATE_WINDOW,
            members=[c.member_id for c in candidates],
            etas=[float(c.eta_s) for c in candidates],
            modes=[c.mode for c in candidates],
            wave_size=wave_size,
            first_state="exercise" if body.exercise else "notified",
            notified_at=None if body.exercise else now,
            delivery_ids=[d.delivery_id for d in deliveries],
            delivery_members=[d.member_id for d in deliveries],
            channels=[d.channel for d in deliveries],
            payloads=[d.payload for d in deliveries],
        ),
    )
    if outcome.outcome == "key_reused":
        msg = "this Idempotency-Key was already used with a different request body"
        raise IdempotencyKeyReused(msg)
    if outcome.outcome == "rate_limited":
        assert outcome.oldest is not None
        retry_after_s = max(1, math.ceil((outcome.oldest + RATE_WINDOW - now).total_seconds()))
        msg = f"at most {settings.alerts_per_hour} alerts an hour; retry in {retry_after_s} s"
        raise RateLimited(msg, retry_after_s=retry_after_s)
    assert outcome.alert_id is not None
    if outcome.outcome == "replay" or coordinator:
        alert = repo.get_alert(session, outcome.alert_id)
        assert alert is not None
        return view_as_creator(session, alert, requester), outcome.outcome == "created"
    # Created for a member: everything the requester may see is known without reading back.
    view = AlertRequesterView(
        id=facts.id,
        status="open",
        kind=body.kind,
        ranking=ranking.method,
        needed=body.needed,
        note=body.note,
        location=Point(type="Point", coordinates=(lon, lat)),
        exercise=body.exercise,
        created_at=now,
        closed_at=None,
        notified_count=0 if body.exercise else wave_size,
        accepted=[],
    )
    return view, True


def create_alert_as(
    factory: sessionmaker[Session],
    graphs: GraphStore,
    settings: Settings,
    *,
    token: str,
    body: AlertCreate,
    idempotency_key: str,
    clock: Clock,
) -> tuple[AlertView, bool]:
    """create_alert() in its own transaction for the holder of ``token`` (401 if unknown).

    Authentication, ranking, the raise call and the commit run as one unit in one thread
    (POST /v1/alerts' hot path; see the router).
    """
    with transaction(factory) as session:
        requester = authenticate_caller(session, token)
        return create_alert(
            session,
            graphs,
            settings,
            requester=requester,
            body=body,
            idempotency_key=idempotency_key,
            now=clock.now(),
        )


@dataclass(frozen=True)
class _Delivery:
    delivery_id: str
    member_id: uuid.UUID
    channel: str
    payload: dict[str, Any]


def _first_wave(
    session: Session,
    settings: Settings,
    facts: AlertFacts,
    first: Sequence[Candidate],
    requester_handle: str,
) -> list[_Delivery]:
    """The first wave's outbox rows: one per channel each member's contact has."""
    channels = {c.member_id: c.channels for c in first}
    unknown = [m for m, ch in channels.items() if ch is None]
    if unknown:
        # Only when the presence index was built without contacts (see Candidate.channels).
        cipher = contact_cipher(settings)
        for member_id, member in repo.members_by_id(session, unknown).items():
            channels[member_id] = member_channels(cipher, member_id, member.contact_ciphertext)
    out: list[_Delivery] = []
    for candidate in first:
        payload = alert_payload(
            settings, facts, requester_handle=requester_handle, eta_s=candidate.eta_s
        )
        out.extend(
            _Delivery(
                delivery_id=delivery_id(facts.id, candidate.member_id, channel, "alert"),
                member_id=candidate.member_id,
                channel=channel,
                payload=payload,
            )
            for channel in channels.get(candidate.member_id) or ()
        )
    return out


def _rank(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    facts: AlertFacts,
    at: datetime,
    exclude: frozenset[uuid.UUID],
    include_busy: bool = False,
) -> Ranking:
    if facts.kind == "mass":
        limit = None
    else:
        limit = RESERVE_WAVES * first_wave_size(facts.needed, settings)
    return rank_members(
        session,
        graphs,
        settings,
        lon=facts.lon,
        lat=facts.lat,
        at=at,
        roles=KIND_ROLES[facts.kind],
        exclude=exclude,
        limit=limit,
        # Personal and defence alerts use the same outer bound as mass ones: nobody further
        # away than that is useful, and the waves take the nearest first anyway.
        max_eta_s=settings.mass_max_eta_s,
        include_busy=include_busy,
    )


def top_up_reserve(
    session: Session, graphs: GraphStore, settings: Settings, *, alert: Alert, now: datetime
) -> int:
    """Rank again, leaving out everyone already ranked, and add the newcomers to the reserve."""
    known = repo.ranked_member_ids(session, alert.id)
    exclude = frozenset(known) | ({alert.requester_id} if alert.requester_id else frozenset())
    # Presence moves on with the clock, also for drills evaluated at a chosen time.
    at = alert.presence_at + (now - alert.created_at)
    ranking = _rank(session, graphs, settings, facts=AlertFacts.of(alert), exclude=exclude, at=at)
    # Members before their new rows (see repo.lock_members): one who left just now is not ranked.
    present = repo.lock_members(session, [c.member_id for c in ranking.candidates])
    candidates = [c for c in ranking.candidates if c.member_id in present]
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
        for i, c in enumerate(candidates)
    ]
    repo.insert_responders(session, rows)
    if ranking.method == "straight_line":
        alert.ranking = "straight_line"
    return len(rows)


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
    payload = _short_payload(settings, alert, message_kind)
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
    # Members before their rows and outbox rows (see lock_members).
    present = repo.lock_members(session, [row.member_id for row in pending])
    ids = [row.member_id for row in pending if row.member_id in present]
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


def purge_alerts(session: Session, *, before: datetime) -> int:
    """Forget alerts closed (never closed: raised) before ``before``, and their outbox rows."""
    # Counted first, in the same transaction: statistics survive the rows (purge_count).
    repo.add_purge_counts(session, repo.purge_counts(session, before=before))
    ids = repo.delete_alerts_before(session, before=before)
    repo.delete_erased(session, ids)
    purge(session, alert_ids=ids)
    return len(ids)
