"""Groups fixtures: commuters on one Helsinki walk corridor, made through the members service."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from sqlalchemy.orm import Session

from api.members import service as members_service
from api.members.models import Member
from api.members.schemas import MemberCreate
from api.settings import Settings
from geo.synth import synth_members
from tests.api.conftest import coordinator, make_member  # noqa: F401  (fixtures, reused)
from tests.api.factories import line, member_body, unique_handle

HOOK = "http://127.0.0.1:9/hook"
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
WEEKEND = ["sat", "sun"]


@dataclass(frozen=True)
class Corridor:
    """A long shortest path across the Helsinki walk graph: the street planted commuters share."""

    lon: np.ndarray
    lat: np.ndarray

    def path(self, lo: int = 0, hi: int = 0) -> dict[str, Any]:
        """The corridor as a GeoJSON LineString, ``lo`` nodes off the start, ``hi`` off the end."""
        end = self.lon.size - hi
        return line(*zip(self.lon[lo:end].tolist(), self.lat[lo:end].tolist(), strict=True))


@pytest.fixture(scope="session")
def corridor(graphs: Any) -> Corridor:
    graph = graphs.get("walk").graph
    a = csr_matrix(
        (graph.travel_time_s.astype(float), graph.indices, graph.indptr),
        shape=(graph.n_nodes, graph.n_nodes),
    )
    # From near the centre of the extract to the farthest node within 40 minutes of it.
    src = int(np.argmin((graph.lon - graph.lon.mean()) ** 2 + (graph.lat - graph.lat.mean()) ** 2))
    d, pred = dijkstra(a, indices=src, return_predecessors=True, limit=2400.0)
    d[~np.isfinite(d)] = -1
    dst = int(np.argmax(d))
    nodes = [dst]
    while nodes[-1] != src:
        nodes.append(int(pred[nodes[-1]]))
    nodes = nodes[::-1]
    assert len(nodes) > 30
    return Corridor(lon=graph.lon[nodes].astype(float), lat=graph.lat[nodes].astype(float))


MakeCommuter = Callable[..., tuple[Member, str]]


@pytest.fixture
def commuter(make_member: Any, corridor: Corridor) -> MakeCommuter:  # noqa: F811
    """commuter(days, start, end, roles=..., **fields): a member walking the corridor then."""
    rng = np.random.default_rng(5)

    def make(
        days: Iterable[str],
        start: str,
        end: str,
        roles: Iterable[str] = ("responder",),
        **fields: Any,
    ) -> tuple[Member, str]:
        lo, hi = (int(x) for x in rng.integers(0, 3, size=2))
        fields.setdefault("contact", {"webhook_url": HOOK})
        fields.setdefault("handle", unique_handle("g"))
        return make_member(
            roles=tuple(roles),
            lon=float(corridor.lon[lo]) + float(rng.normal(0, 0.0005)),
            lat=float(corridor.lat[lo]) + float(rng.normal(0, 0.0003)),
            side_m=220.0,
            routes=[
                {"path": corridor.path(lo, hi), "days": list(days), "start": start, "end": end}
            ],
            **fields,
        )

    return make


@pytest.fixture
def background(db: Session, settings: Settings, graphs: Any) -> list[Member]:
    """Thirty synthetic walkers commuting elsewhere in the extract (homes, zones, routes)."""
    bodies = synth_members(
        graphs.get("walk").graph, 30, seed=11, handle_prefix=unique_handle("bg"), mode_shares=None
    )
    made = []
    for body in bodies:
        body["mode"] = "walk"
        body["contact"] = {"webhook_url": HOOK}
        for route in body.get("routes", []):
            route.pop("mode", None)
        member, _ = members_service.create_member(
            db, settings, MemberCreate.model_validate(body), actor=None, graphs=graphs
        )
        made.append(member)
    db.commit()
    return made


__all__ = ["WEEKDAYS", "WEEKEND", "member_body"]
