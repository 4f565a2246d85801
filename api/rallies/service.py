"""Rally notices: everyone usually within some minutes of a place at a time, through the outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api.alerts import repository as alerts_repo
from api.alerts.messages import location_text
from api.graphs import GraphStore
from api.idempotency import replayed
from api.idempotency import request_hash as canonical_hash
from api.members.models import Member
from api.notify.service import enqueue_many
from api.presence.area import check_in_service_area
from api.presence.ranking import rank_members
from api.rallies import repository as repo
from api.rallies.errors import RallyKeyReused
from api.rallies.schemas import RallyCreate, RallyRead
from api.settings import Settings
from api.types import Point

RESPONDERS = frozenset({"responder"})


def request_hash(body: RallyCreate) -> bytes:
    """SHA-256 of the canonical body (what a retry with the same key must repeat)."""
    data = body.model_dump(mode="json")
    data["at"] = body.at.astimezone(UTC).isoformat()
    return canonical_hash(data)


def send_rally(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    coordinator: Member,
    body: RallyCreate,
    idempotency_key: str,
    now: datetime,
) -> tuple[RallyRead, bool]:
    """Queue the notice to everyone in reach; True when sent now, False for a retry."""
    lon, lat = body.location.coordinates
    point = check_in_service_area(graphs, settings, lon=lon, lat=lat)
    digest = request_hash(body)
    rally_id = uuid.uuid4()
    existing = repo.claim(
        session,
        rally_id=rally_id,
        coordinator_id=coordinator.id,
        key=idempotency_key,
        request_hash=digest,
        now=now,
    )
    if existing is not None:
        msg = "this Idempotency-Key was already used for a different rally"
        return replayed(existing, digest, RallyRead, RallyKeyReused(msg)), False
    # Where people usually are at `at`; the mobilisation delay is not part of "minutes away".
    ranking = rank_members(
        session,
        graphs,
        settings,
        lon=lon,
        lat=lat,
        at=body.at.astimezone(UTC),
        roles=None if body.everyone else RESPONDERS,
        exclude=frozenset({coordinator.id}),
        limit=None,
        max_eta_s=body.minutes * 60 + settings.mobilization_s,
        include_busy=True,
        point=point,
    )
    ids = [c.member_id for c in ranking.candidates if c.channels is None or c.channels]
    present = alerts_repo.lock_members(session, ids)
    members = alerts_repo.members_by_id(session, [m for m in ids if m in present])
    payload = {
        "subject": "ern: rally notice",
        "text": f"ern rally notice, near {location_text(lon=lon, lat=lat)}:\n{body.text}",
        "rally": {
            "rally_id": str(rally_id),
            "location": Point(type="Point", coordinates=(lon, lat)).model_dump(mode="json"),
            "at": body.at.astimezone(UTC).isoformat(),
            "minutes": body.minutes,
            "text": body.text,
        },
    }
    enqueue_many(
        session,
        settings,
        messages=[(member, payload) for member in members.values()],
        alert_id=rally_id,
        message_kind="rally",
        now=now,
    )
    rally = repo.get(session, rally_id)
    assert rally is not None
    rally.sent_count = len(members)
    session.flush()
    return RallyRead(id=rally_id, sent_count=len(members), created_at=now), True
