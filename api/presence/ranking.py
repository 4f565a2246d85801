"""Member ranking: who is soonest at a point at a time, and who is away (snoozed or busy)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.presence import repository as repo
from api.presence.area import SnappedPoint
from api.presence.cache import presence_index
from api.presence.candidates import Ranking
from api.presence.modes import MODES
from api.settings import Settings


def rank_members(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    lon: float,
    lat: float,
    at: datetime,
    roles: frozenset[str] | None,
    exclude: frozenset[uuid.UUID],
    limit: int | None,
    max_eta_s: float,
    include_busy: bool = False,
    point: SnappedPoint | None = None,
) -> Ranking:
    """Members soonest at (lon, lat) at ``at``, best first; ``limit`` None: all within max_eta_s.

    Snoozed members are never ranked; busy ones (accepted an alert that is still open) only
    with ``include_busy`` (a coordinator's mass alert). ``point``: (lon, lat) as the
    service-area check returned it, so that the point is snapped once per mode graph.
    """
    if limit is not None and limit < 1:
        return Ranking(candidates=[], method=_method(graphs))
    if include_busy:
        token, live = repo.token_and_live_locations(session, at=at)
    else:
        token, live, busy = repo.token_live_and_busy(session, at=at)
        exclude = exclude | busy
    index = presence_index(session, graphs, settings, token=token)
    return index.rank(
        lon=lon,
        lat=lat,
        at=at,
        roles=roles,
        exclude=exclude,
        limit=limit,
        max_eta_s=max_eta_s,
        live=live,
        point=point,
    )


def away_member_ids(session: Session, *, at: datetime) -> set[uuid.UUID]:
    """Members not to notify at ``at``: snoozed then, or busy with an alert still open."""
    return repo.busy_member_ids(session) | repo.snoozed_member_ids(session, at=at)


def _method(graphs: GraphStore) -> Literal["street_network", "straight_line"]:
    missing = any(mode not in graphs.by_mode for mode in MODES)
    return "straight_line" if missing else "street_network"
