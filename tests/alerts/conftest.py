"""Alert fixtures: an app on a manual clock; members placed on chosen Helsinki graph nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import networkx as nx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from api import database
from api.alerts.models import Alert
from api.clock import ManualClock
from api.members import service as members_service
from api.members.models import Member
from api.members.schemas import MemberCreate
from api.notify.models import Delivery
from tests.alerts.helpers import HOOK, Site, make_site
from tests.api.conftest import coordinator, make_member  # noqa: F401  (fixtures, reused)
from tests.api.factories import member_body, unique_handle

# Tuesday 12:00 in Helsinki (the test settings' time zone).
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def api(settings, graphs, engine, session_factory, clock) -> TestClient:
    """A client of an app whose clock only moves when the test says so."""
    from api.main import create_app

    app = create_app(
        settings, engine=engine, session_factory=session_factory, graphs=graphs, clock=clock
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="session")
def walk_nx(graphs) -> nx.DiGraph:
    return graphs.get("walk").graph.to_networkx()


@pytest.fixture(scope="session")
def site(graphs, walk_nx) -> Site:
    """A well-connected node near the middle of the Helsinki extract."""
    graph = graphs.get("walk").graph
    largest = max(nx.strongly_connected_components(walk_nx), key=len)
    mid_lon, mid_lat = float(graph.lon.mean()), float(graph.lat.mean())
    target = min(
        largest, key=lambda n: (graph.lon[n] - mid_lon) ** 2 + (graph.lat[n] - mid_lat) ** 2
    )
    return make_site(graphs, walk_nx, int(target))


Place = Callable[..., tuple[Member, str]]


@pytest.fixture
def place(make_member) -> Place:  # noqa: F811
    """place(site, node, roles=..., **fields): a member with a home zone centred on a node."""

    def make(site: Site, node: int, roles: Iterable[str] = ("responder",), **fields: Any):
        fields.setdefault("contact", {"webhook_url": HOOK})
        fields.setdefault("handle", unique_handle("r"))
        return make_member(
            roles=tuple(roles),
            lon=float(site.graph.lon[node]),
            lat=float(site.graph.lat[node]),
            side_m=220.0,
            **fields,
        )

    return make


@pytest.fixture
def crowd(site: Site, place: Place) -> list[tuple[Member, str]]:
    """Twelve responders on distinct nodes, listed nearest first."""
    nodes = site.nodes_by_time()[5:200:16][:12]
    return [place(site, n) for n in nodes]


# --- committed data: several connections see each other's commits ---------------------------


@pytest.fixture
def committed(engine, settings, graphs, site, clock) -> Iterator[dict[str, Any]]:
    """An app on real commits, a requester and five responders; everything deleted afterwards."""
    from api.main import create_app

    factory = database.make_session_factory(engine)
    made: list[Member] = []
    tokens: dict[str, str] = {}
    with database.transaction(factory) as session:
        for i, node in enumerate([None, *site.nodes_by_time()[10:60:10]]):
            roles = ["responder"] if node is not None else []
            lon = float(site.graph.lon[node]) if node is not None else site.lon
            lat = float(site.graph.lat[node]) if node is not None else site.lat
            data = member_body(
                unique_handle("c"),
                roles=roles,
                lon=lon,
                lat=lat,
                side_m=220.0,
                contact={"webhook_url": "http://127.0.0.1:9/hook"},
            )
            member, token = members_service.create_member(
                session, settings, MemberCreate.model_validate(data), actor=None, graphs=graphs
            )
            made.append(member)
            tokens["requester" if i == 0 else f"r{i}"] = token
    app = create_app(settings, engine=engine, session_factory=factory, graphs=graphs, clock=clock)
    yield {"app": app, "tokens": tokens, "members": made, "factory": factory}
    ids = [m.id for m in made]
    with database.transaction(factory) as session:
        alert_ids = session.scalars(select(Alert.id).where(Alert.requester_id.in_(ids))).all()
        session.execute(delete(Delivery).where(Delivery.alert_id.in_(alert_ids)))
        session.execute(delete(Alert).where(Alert.id.in_(alert_ids)))
        session.execute(delete(Member).where(Member.id.in_(ids)))
