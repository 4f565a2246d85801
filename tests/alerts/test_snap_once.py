"""The alert (and rally) point is snapped once per mode graph ranked on, not again by ranking.

The real GraphStore's snappers are wrapped in a proxy that counts calls and passes them on:
what is snapped, and the answers, are the real ones.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.alerts.schemas import AlertCoordinatorView
from api.graphs import GraphStore, ModeGraph
from api.presence.cache import presence_index
from api.presence.ranking import rank_members
from geo.snap import Snapper
from tests.alerts.helpers import post_alert
from tests.api.factories import auth


class CountingSnapper:
    """A real Snapper, counting the calls of snap()."""

    def __init__(self, inner: Snapper) -> None:
        self.inner = inner
        self.calls = 0

    def snap(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.snap(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def counted(graphs: GraphStore) -> GraphStore:
    """The session's graphs, each snapper wrapped (a store of its own: its own presence index)."""
    return GraphStore(
        by_mode={
            mode: ModeGraph(graph=mg.graph, snapper=CountingSnapper(mg.snapper))  # type: ignore[arg-type]
            for mode, mg in graphs.by_mode.items()
        },
        problems=dict(graphs.problems),
    )


@pytest.fixture
def counted_api(settings, counted, engine, session_factory, clock) -> TestClient:
    from api.main import create_app

    app = create_app(
        settings, engine=engine, session_factory=session_factory, graphs=counted, clock=clock
    )
    return TestClient(app, raise_server_exceptions=False)


def calls(store: GraphStore) -> dict[str, int]:
    return {mode: mg.snapper.calls for mode, mg in store.by_mode.items()}  # type: ignore[attr-defined]


def reset(store: GraphStore) -> None:
    for mg in store.by_mode.values():
        mg.snapper.calls = 0  # type: ignore[attr-defined]


def members_in(site, place, modes: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    nodes = site.nodes_by_time()[5:200:16]
    for i, mode in enumerate(modes * 2):
        place(site, nodes[i], mode=mode)


def warm(db, counted, settings) -> None:  # type: ignore[no-untyped-def]
    # Building the index snaps every zone: done before the alert, then the counts start.
    presence_index(db, counted, settings)
    reset(counted)


@pytest.mark.parametrize("modes", [("walk",), ("walk", "bike", "drive"), ("bike", "drive")])
def test_one_alert_snaps_its_point_once_per_mode_used(
    counted_api, counted, db, settings, site, place, make_member, modes
):
    members_in(site, place, modes)
    _, token = make_member(roles=())
    warm(db, counted, settings)
    res = post_alert(
        counted_api, token, {"location": site.point(), "kind": "personal", "needed": 2}
    )
    assert res.status_code == 201, res.text
    assert res.json()["notified_count"] > 0
    # The service-area check snaps to walk; ranking reuses it and snaps the other modes once.
    expected = {mode: int(mode == "walk" or mode in modes) for mode in counted.by_mode}
    assert calls(counted) == expected


def test_the_passed_on_snap_ranks_as_a_fresh_one(
    counted_api, counted, graphs, db, settings, site, place, coordinator, clock
):
    members_in(site, place, ("walk", "bike", "drive"))
    _, coord = coordinator
    warm(db, counted, settings)
    body = {"location": site.point(), "kind": "mass", "needed": 1, "exercise": True}
    res = post_alert(counted_api, coord, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    assert calls(counted) == dict.fromkeys(counted.by_mode, 1)
    view = AlertCoordinatorView.model_validate(res.json())
    lon, lat = site.point()["coordinates"]
    fresh = rank_members(
        db,
        graphs,
        settings,
        lon=lon,
        lat=lat,
        at=clock.now(),
        roles=None,
        exclude=frozenset({view.requester_id}),
        limit=None,
        max_eta_s=settings.mass_max_eta_s,
        include_busy=True,
    )
    assert len(view.responders) >= 6
    assert [(r.member_id, r.eta_s) for r in view.responders] == [
        (c.member_id, c.eta_s) for c in fresh.candidates
    ]


def test_a_rally_snaps_its_point_once_per_mode_used(
    counted_api, counted, db, settings, site, place, coordinator, clock
):
    members_in(site, place, ("walk", "drive"))
    _, coord = coordinator
    warm(db, counted, settings)
    body = {
        "location": site.point(),
        "at": (clock.now() - timedelta(hours=1)).isoformat(),
        "minutes": 30,
        "text": "Thank you all",
    }
    res = counted_api.post(
        "/v1/rallies", json=body, headers={**auth(coord), "Idempotency-Key": "r1"}
    )
    assert res.status_code == 201, res.text
    assert res.json()["sent_count"] > 0
    assert calls(counted) == {mode: int(mode in ("walk", "drive")) for mode in counted.by_mode}
