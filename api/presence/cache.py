"""The per-process cache of the presence index: keyed by the database's presence token,
invalidated explicitly or by any write to the members' presence rows, warmed at start-up."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.presence import repository as repo
from api.presence.index import PresenceIndex
from api.settings import Settings

_UNREAD = object()


def invalidate_presence() -> None:
    """Drop every cached presence index of this process (the next alert rebuilds it)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def presence_index(
    session: Session, graphs: GraphStore, settings: Settings, *, token: Any = _UNREAD
) -> PresenceIndex:
    """The cached index for these graphs, rebuilt when the database's presence token changed.

    ``token``: the presence token if the caller has just read it (saves a round trip).
    """
    # The token is read before the rows: a change committed in between makes the next
    # alert rebuild again, never keeps stale rows under a new token.
    if token is _UNREAD:
        token = repo.presence_token(session)
    # Everything the index bakes in; apps sharing graphs with other settings get their own.
    key = (
        token,
        settings.max_snap_m,
        settings.walk_speed_mps,
        settings.bike_speed_mps,
        settings.mobilization_s,
        settings.timezone,
    )
    cached = _cached(graphs, key)
    if cached is not None:
        return cached
    with _BUILD_LOCK:
        cached = _cached(graphs, key)
        if cached is not None:
            return cached
        with _CACHE_LOCK:
            entry = _CACHE.get(id(graphs))
        previous = None
        if entry is not None and entry[0]() is graphs and entry[1].key[1:] == key[1:]:
            previous = entry[1]
        index = PresenceIndex.build(
            graphs,
            settings,
            key=key,
            members=repo.member_rows(session),
            zones=repo.zone_rows(session),
            routes=repo.route_rows(session),
            previous=previous,
        )
        if token is not None:
            with _CACHE_LOCK:
                _CACHE[id(graphs)] = (weakref.ref(graphs), index)
        return index


_CACHE: dict[int, tuple[weakref.ref[GraphStore], PresenceIndex]] = {}
_CACHE_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()


def _cached(graphs: GraphStore, key: tuple[Any, ...]) -> PresenceIndex | None:
    with _CACHE_LOCK:
        entry = _CACHE.get(id(graphs))
    if entry is None or entry[0]() is not graphs or entry[1].key != key:
        return None
    return entry[1]


def warm_presence(session_factory: Any, graphs: GraphStore, settings: Settings) -> PresenceIndex:
    """Build the presence index before the first alert needs it (start-up, in a thread)."""
    with session_factory() as session:
        return presence_index(session, graphs, settings)
