"""Presence fixtures: members inserted through the ORM around chosen nodes, reference graphs."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable
from datetime import time
from typing import Any

import networkx as nx
import pytest
import shapely
from geoalchemy2.shape import from_shape
from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.members.models import Member, MemberRoute, MemberZone
from api.presence.cache import invalidate_presence
from tests.api.conftest import coordinator, make_member, responder  # noqa: F401  (fixtures)

_handles = itertools.count()
# Half a metre: a zone this small around a node holds that node only.
NODE_BOX_DEG = 5e-6


def node_box(graph: Any, node: int) -> shapely.Polygon:
    """A tiny square zone around a graph node."""
    x, y = float(graph.lon[node]), float(graph.lat[node])
    return shapely.box(x - NODE_BOX_DEG, y - NODE_BOX_DEG, x + NODE_BOX_DEG, y + NODE_BOX_DEG)


AddMember = Callable[..., Member]


@pytest.fixture
def add_member(db: Session) -> AddMember:
    """add_member(home=Polygon, mode=..., roles=..., zones=[(Polygon, days, start, end)],
    routes=[(LineString, days, start, end)], quiet=(start, end), speed_mps=..., available=...)."""

    def add(
        home: shapely.Polygon | None,
        *,
        mode: str = "walk",
        roles: Iterable[str] = ("responder",),
        zones: Iterable[tuple[shapely.Polygon, list[str], time, time]] = (),
        routes: Iterable[tuple[shapely.LineString, list[str], time, time]] = (),
        quiet: tuple[time, time] | None = None,
        speed_mps: float | None = None,
        available: bool = True,
    ) -> Member:
        member = Member(
            id=uuid.uuid4(),
            handle=f"p{next(_handles)}-{uuid.uuid4().hex[:6]}",
            roles=list(roles),
            mode=mode,
            speed_mps=speed_mps,
            home_zone=None if home is None else from_shape(home, srid=4326),
            available=available,
            quiet_start=quiet[0] if quiet else None,
            quiet_end=quiet[1] if quiet else None,
        )
        member.zones = [
            MemberZone(
                name=f"z{i}", area=from_shape(p, srid=4326), days=d, start_time=s, end_time=e
            )
            for i, (p, d, s, e) in enumerate(zones)
        ]
        member.routes = [
            MemberRoute(path=from_shape(p, srid=4326), days=d, start_time=s, end_time=e)
            for p, d, s, e in routes
        ]
        db.add(member)
        db.flush()
        return member

    return add


@pytest.fixture(autouse=True)
def _fresh_presence_cache() -> None:
    """Each test starts without a cached presence index (the token would also tell)."""
    invalidate_presence()


@pytest.fixture(scope="session")
def reversed_nx(graphs: GraphStore) -> dict[str, nx.DiGraph]:
    """Reversed NetworkX Helsinki graphs: distances from a target are node -> target times."""
    return {m: g.graph.to_networkx().reverse(copy=True) for m, g in graphs.by_mode.items()}
