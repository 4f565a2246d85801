"""PresenceIndex against a brute-force reference at many times (cached segments must not leak)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, time, timedelta

import networkx as nx
import numpy as np
import pytest
import shapely

from api.graphs import GraphStore, ModeGraph
from api.presence.index import PresenceIndex
from api.settings import Settings
from geo import presence as gp
from geo.snap import Snapper
from tests.geo.test_presence import _grid
from tests.presence.conftest import node_box

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _active(days: list[str], start: time, end: time, local: datetime) -> bool:
    """Reference rule, written out: the wrap part belongs to the day the window starts on."""
    t = local.time()
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    if start < end:
        return today in days and start <= t < end
    return (today in days and t >= start) or (yesterday in days and t < end)


def test_rank_equals_brute_force_over_a_week(settings: Settings) -> None:
    rng = np.random.default_rng(11)
    g = _grid(9)
    store = GraphStore(by_mode={"walk": ModeGraph(graph=g, snapper=Snapper(g))})
    local_settings = settings.model_copy(update={"timezone": "Europe/Helsinki"})
    members, zones, routes = [], [], []
    truth: dict[uuid.UUID, dict[str, object]] = {}
    for i in range(25):
        mid = uuid.uuid4()
        home = int(rng.integers(g.n_nodes))
        quiet = (
            (time(int(rng.integers(24))), time(int(rng.integers(24)), 30)) if i % 4 == 0 else None
        )
        members.append(
            (
                mid,
                f"m{i}",
                ["responder"],
                "walk",
                None,
                *(quiet or (None, None)),
                shapely.to_wkb(node_box(g, home)),
            )
        )
        info: dict[str, object] = {"home": home, "zones": [], "routes": [], "quiet": quiet}
        for _ in range(int(rng.integers(0, 3))):
            node = int(rng.integers(g.n_nodes))
            days = sorted(set(rng.choice(DAYS, size=int(rng.integers(1, 4))).tolist()))
            start, end = time(int(rng.integers(24))), time(int(rng.integers(24)), 15)
            zones.append((mid, shapely.to_wkb(node_box(g, node)), days, start, end))
            info["zones"].append((node, days, start, end))  # type: ignore[attr-defined]
        if i % 3 == 0:
            a, b = (int(x) for x in rng.integers(g.n_nodes, size=2))
            path = nx.shortest_path(g.to_networkx(), a, b, weight="travel_time_s")
            if len(path) > 1:
                days = ["mon", "tue", "wed", "thu", "fri"]
                start, end = time(int(rng.integers(24))), time(int(rng.integers(24)), 45)
                line = shapely.LineString([(g.lon[n], g.lat[n]) for n in path])
                routes.append((mid, shapely.to_wkb(line), days, start, end))
                info["routes"].append((path, days, start, end))  # type: ignore[attr-defined]
        truth[mid] = info
    index = PresenceIndex.build(
        store, local_settings, key=("t",), members=members, zones=zones, routes=routes
    )
    rev = g.to_networkx().reverse(copy=True)
    tz = index.timezone
    start_at = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    for _ in range(60):
        at = start_at + timedelta(minutes=int(rng.integers(7 * 24 * 60)))
        target = int(rng.integers(g.n_nodes))
        local = at.astimezone(tz)
        dist = nx.single_source_dijkstra_path_length(rev, target, weight="travel_time_s")
        expected: dict[uuid.UUID, float] = {}
        for mid, info in truth.items():
            quiet = info["quiet"]
            if quiet is not None and _active(list(DAYS), quiet[0], quiet[1], local):  # type: ignore[index]
                continue
            on_routes = [n for p, d, s, e in info["routes"] if _active(d, s, e, local) for n in p]  # type: ignore[attr-defined]
            in_zones = [n for n, d, s, e in info["zones"] if _active(d, s, e, local)]  # type: ignore[attr-defined]
            nodes = on_routes or in_zones or [info["home"]]
            expected[mid] = settings.mobilization_s + min(dist[n] for n in nodes)
        ranking = index.rank(
            lon=float(g.lon[target]),
            lat=float(g.lat[target]),
            at=at,
            roles=None,
            exclude=frozenset(),
            limit=None,
            max_eta_s=1e9,
        )
        got = {c.member_id: c.eta_s for c in ranking.candidates}
        assert set(got) == set(expected), local
        for mid, eta in got.items():
            assert eta == pytest.approx(expected[mid], abs=1e-3), local


def test_next_segment_is_prefetched_and_right(settings: Settings) -> None:
    g = _grid(5)
    store = GraphStore(by_mode={"walk": ModeGraph(graph=g, snapper=Snapper(g))})
    local_settings = settings.model_copy(update={"timezone": "Europe/Helsinki"})
    mid = uuid.uuid4()
    members = [(mid, "a", ["responder"], "walk", None, None, None, shapely.to_wkb(node_box(g, 0)))]
    zones = [(mid, shapely.to_wkb(node_box(g, 24)), ["tue"], time(9), time(10))]
    index = PresenceIndex.build(
        store, local_settings, key=("p",), members=members, zones=zones, routes=[]
    )
    mp = index.modes["walk"]
    tue_0830 = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)  # 08:30 in Helsinki
    tue_0915 = tue_0830 + timedelta(minutes=45)

    def eta(at: datetime) -> float:
        ranking = index.rank(
            lon=float(g.lon[24]),
            lat=float(g.lat[24]),
            at=at,
            roles=None,
            exclude=frozenset(),
            limit=None,
            max_eta_s=1e9,
        )
        return ranking.candidates[0].eta_s

    assert eta(tue_0830) == pytest.approx(settings.mobilization_s + 8 * 10.0)
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while mp._pending and datetime.now(UTC) < deadline:
        threading.Event().wait(0.01)
    local = tue_0915.astimezone(index.timezone)
    segment = gp.week_segment(mp.boundaries, local.weekday(), local.hour * 3600 + local.minute * 60)
    assert (segment, -1) in mp._indexes
    assert eta(tue_0915) == pytest.approx(settings.mobilization_s)
