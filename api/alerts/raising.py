"""Raising an alert: idempotent, rate-limited, ranked, first wave ready; the reserve topped up."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.alerts import repository as repo
from api.alerts.acceptance import arrival_ranking, first_wave_size
from api.alerts.errors import CoordinatorOnly, IdempotencyKeyReused, RateLimited
from api.alerts.facts import AlertFacts
from api.alerts.messages import alert_payload
from api.alerts.models import Alert
from api.alerts.schemas import AlertCreate, AlertRequesterView, AlertView
from api.alerts.views import view_as_creator
from api.clock import Clock
from api.database import transaction
from api.graphs import GraphStore
from api.groups.buddies import buddies_first
from api.members.auth import Caller, authenticate_caller, is_coordinator
from api.members.crypto import contact_cipher
from api.notify.service import delivery_id, member_channels
from api.presence.area import SnappedPoint, check_in_service_area
from api.presence.candidates import Candidate, Ranking
from api.presence.ranking import rank_members
from api.settings import Settings
from api.types import Point

RATE_WINDOW = timedelta(hours=1)
# Retries come within seconds or minutes. A key seen again days later is a client reusing
# keys (e.g. a counter reset by a reinstall): answering with an old alert would silently
# swallow a new emergency, so past this window the key makes a new alert.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# Waves' worth of candidates ranked up front: escalation then needs no new search.
RESERVE_WAVES = 4
# Who a kind of alert goes to; a personal alert also goes to the requester's buddy group and
# its point contact, ahead of the ranking (api.groups.buddies).
KIND_ROLES: dict[str, frozenset[str] | None] = {
    "personal": frozenset({"responder", "defense"}),
    "defense": frozenset({"defense"}),
    "mass": None,
}


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
    point = check_in_service_area(graphs, settings, lon=lon, lat=lat)
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
        point=point,
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
            point=point,
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
    point: SnappedPoint | None = None,
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
        point=point,
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
