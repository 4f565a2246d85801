"""Buddies first: a personal alert's first wave starts with the requester's group and contact."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.groups import texts_repository as repo
from api.presence.area import SnappedPoint
from api.presence.candidates import Candidate
from api.presence.ranking import rank_members
from api.settings import Settings


def buddies_first(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    requester_id: uuid.UUID,
    lon: float,
    lat: float,
    at: datetime,
    candidates: list[Candidate],
    wave_size: int,
    point: SnappedPoint | None = None,
) -> tuple[list[Candidate], int]:
    """The ranking with the requester's buddies in front, and the first wave's new size.

    The members of the requester's current group and its point contact who are available
    (not busy, snoozed, unavailable or in quiet hours) and arrive within ERN_MAX_ETA_S come
    first, soonest first, whatever their roles; the rest keep their order. The first wave
    grows to hold every buddy: max(``wave_size``, buddies).
    """
    group = repo.current_group_of(session, requester_id)
    if group is None:
        return candidates, wave_size
    others, contact_id = group
    wanted = set(others) | ({contact_id} if contact_id is not None else set())
    wanted.discard(requester_id)
    if not wanted:
        return candidates, wave_size
    # The same presence ranking as the alert's, any role, bounded by the buddies' limit.
    reach = rank_members(
        session,
        graphs,
        settings,
        lon=lon,
        lat=lat,
        at=at,
        roles=None,
        exclude=frozenset({requester_id}),
        limit=None,
        max_eta_s=settings.max_eta_s,
        point=point,
    )
    buddies = [c for c in reach.candidates if c.member_id in wanted]
    if not buddies:
        return candidates, wave_size
    first = {c.member_id for c in buddies}
    rest = [c for c in candidates if c.member_id not in first]
    return [*buddies, *rest], max(wave_size, len(buddies))
