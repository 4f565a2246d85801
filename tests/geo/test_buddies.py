"""Buddy groups: map matching, sparse similarity, capped Leiden groups, contacts, quality."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pytest
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from geo import buddies
from geo.graph import StreetGraph
from geo.presence import days_mask
from geo.snap import Snapper
from geo.synth import synth_members
from tests.paths import extract

WEEK = days_mask(["mon", "tue", "wed", "thu", "fri"])
WEEKEND = days_mask(["sat", "sun"])


def _grid(n: int = 6, step_deg: float = 0.001) -> StreetGraph:
    """An n x n two-way grid, 60 s per edge."""
    lon, lat, u, v = [], [], [], []
    for r in range(n):
        for c in range(n):
            lon.append(c * step_deg)
            lat.append(r * step_deg)
    for r in range(n):
        for c in range(n):
            i = r * n + c
            for j in ([i + 1] if c + 1 < n else []) + ([i + n] if r + 1 < n else []):
                u += [i, j]
                v += [j, i]
    return StreetGraph.from_edges("walk", u, v, np.full(len(u), 60.0), lon, lat)


class TestMatchRoutes:
    def test_path_through_vertices_is_the_shortest_path(self) -> None:
        g = _grid()
        snap = Snapper(g)
        # corner to corner through the centre: vertices (0,0) -> (2,3) -> (5,5)
        line = shapely.LineString([(0, 0), (0.003, 0.002), (0.005, 0.005)])
        m = buddies.match_routes(g, snap, [line])
        assert m.unmatched == {}
        ref = g.to_networkx()
        a = nx.shortest_path_length(ref, 0, 2 * 6 + 3, weight="travel_time_s")
        b = nx.shortest_path_length(ref, 2 * 6 + 3, 35, weight="travel_time_s")
        assert m.edge_time_s.sum() == pytest.approx(a + b)
        assert m.edge_route.size == (a + b) / 60

    def test_off_network_and_gap_routes_are_reported_with_a_reason(self) -> None:
        g = _grid()
        snap = Snapper(g)
        far = shapely.LineString([(1.0, 1.0), (1.001, 1.0), (1.002, 1.0)])
        ok = shapely.LineString([(0, 0), (0.002, 0)])
        point = shapely.LineString([(0, 0), (0.00001, 0)])
        m = buddies.match_routes(g, snap, [far, ok, point], max_snap_m=50)
        assert set(m.unmatched) == {0, 2}
        assert "off the walk network" in m.unmatched[0]
        assert "covers no street" in m.unmatched[2]
        gap = buddies.match_routes(g, snap, [ok], max_gap_m=100)
        assert "gap" in gap.unmatched[0]


@dataclass
class Population:
    graph: StreetGraph
    snapper: Snapper
    kwargs: dict[str, Any]
    planted: dict[str, list[int]]


def _corridor(graph: StreetGraph) -> np.ndarray:
    """A long shortest path across the graph: the planted commuters' shared street."""
    a = csr_matrix(
        (graph.travel_time_s.astype(float), graph.indices, graph.indptr),
        shape=(graph.n_nodes, graph.n_nodes),
    )
    src = int(np.argmin(graph.lon))
    d, pred = dijkstra(a, indices=src, return_predecessors=True)
    d[~np.isfinite(d)] = -1
    dst = int(np.argmax(d))
    path = [dst]
    while path[-1] != src:
        path.append(int(pred[path[-1]]))
    return np.array(path[::-1], dtype=np.int64)


def _population(graph: StreetGraph, n_background: int = 150) -> Population:
    members = synth_members(graph, n_background, seed=7)
    corridor = _corridor(graph)
    rng = np.random.default_rng(3)
    rows: list[tuple[int, shapely.LineString, int, int, int]] = []
    home_lon, home_lat, defence = [], [], []

    def hm(s: str) -> int:
        h, m = s.split(":")
        return int(h) * 3600 + int(m) * 60

    for i, m in enumerate(members):
        for r in m["routes"]:
            rows.append(
                (
                    i,
                    shapely.LineString(r["path"]["coordinates"]),
                    days_mask(r["days"]),
                    hm(r["start"]),
                    hm(r["end"]),
                )
            )
        c = shapely.geometry.shape(m["home_zone"]).centroid
        home_lon.append(c.x)
        home_lat.append(c.y)
        if "defense" in m["roles"]:
            defence.append(i)
    planted: dict[str, list[int]] = {}
    # same corridor: weekday mornings, weekday evenings, weekend mornings
    for name, mask, start in (
        ("morning", WEEK, 8 * 3600),
        ("evening", WEEK, 18 * 3600),
        ("weekend", WEEKEND, 8 * 3600),
    ):
        planted[name] = []
        for _ in range(5):
            i = len(home_lon)
            lo = int(rng.integers(0, 3))
            hi = corridor.size - int(rng.integers(0, 3))
            nodes = corridor[lo:hi]
            line = shapely.LineString(np.column_stack([graph.lon[nodes], graph.lat[nodes]]))
            jitter = int(rng.integers(0, 4)) * 300
            rows.append((i, line, mask, start + jitter, start + jitter + 1800))
            home_lon.append(float(graph.lon[nodes[0]]) + rng.normal(0, 0.001))
            home_lat.append(float(graph.lat[nodes[0]]) + rng.normal(0, 0.001))
            planted[name].append(i)
    kwargs = {
        "n_members": len(home_lon),
        "route_member": [r[0] for r in rows],
        "route_lines": [r[1] for r in rows],
        "route_days": [r[2] for r in rows],
        "route_start_s": [r[3] for r in rows],
        "route_end_s": [r[4] for r in rows],
        "home_lon": home_lon,
        "home_lat": home_lat,
        "defence": defence,
    }
    return Population(graph, Snapper(graph), kwargs, planted)


@pytest.fixture(scope="module")
def monaco_walk(build_cached: Callable[..., dict[str, StreetGraph]]) -> StreetGraph:
    return build_cached(extract("monaco_2016"), ("walk",))["walk"]


@pytest.fixture(scope="module")
def population(monaco_walk: StreetGraph) -> Population:
    return _population(monaco_walk)


@pytest.fixture(scope="module")
def proposal(population: Population) -> buddies.Proposal:
    return buddies.propose(population.graph, population.snapper, **population.kwargs)


def _group_of(p: buddies.Proposal, m: int) -> int | None:
    for gi, g in enumerate(p.groups):
        if m in g:
            return gi
    return None


class TestProposeOnMonaco:
    def test_planted_commuters_sharing_corridor_and_hours_are_together(
        self, population: Population, proposal: buddies.Proposal
    ) -> None:
        for name, ms in population.planted.items():
            groups = {_group_of(proposal, m) for m in ms}
            assert len(groups) == 1 and None not in groups, name

    def test_same_corridor_at_other_hours_or_days_is_apart(
        self, population: Population, proposal: buddies.Proposal
    ) -> None:
        g = {name: _group_of(proposal, ms[0]) for name, ms in population.planted.items()}
        assert len(set(g.values())) == 3

    def test_groups_respect_the_caps(self, proposal: buddies.Proposal) -> None:
        sizes = [len(g) for g in proposal.groups]
        assert max(sizes) <= 10
        assert min(sizes) >= 2
        # min_size 3 "where possible": a pair remains only when every group it links to is full
        assert sum(s >= 3 for s in sizes) / len(sizes) > 0.85
        placed = [m for g in proposal.groups for m in g]
        assert len(placed) == len(set(placed))
        assert set(placed).isdisjoint(proposal.unplaced)

    def test_smaller_cap_is_respected(self, population: Population) -> None:
        p = buddies.propose(
            population.graph, population.snapper, **population.kwargs, max_size=4, min_size=2
        )
        assert max(len(g) for g in p.groups) <= 4
        with pytest.raises(ValueError, match="max_size"):
            buddies.partition(csr_matrix((3, 3)), max_size=11)

    def test_better_than_both_baselines(self, proposal: buddies.Proposal) -> None:
        q = proposal.quality
        assert q.mean_shared_minutes > 1.5 * q.random_baseline
        assert q.mean_shared_minutes > 1.2 * q.locality_baseline
        assert q.placed_share > 0.9
        assert sum(k * v for k, v in q.size_histogram.items()) == sum(
            len(g) for g in proposal.groups
        )

    def test_contacts_are_defence_members_within_capacity_and_limit(
        self, population: Population, proposal: buddies.Proposal
    ) -> None:
        defence = set(population.kwargs["defence"])
        used = [c for c in proposal.point_contact if c is not None]
        assert used, "some group has a contact"
        assert set(used) <= defence
        assert max(used.count(c) for c in used) <= buddies.DEFAULT_MAX_GROUPS_PER_CONTACT
        for c, eta in zip(proposal.point_contact, proposal.contact_eta_s, strict=True):
            assert (c is None) == (eta is None)
            assert eta is None or eta <= buddies.DEFAULT_CONTACT_MAX_ETA_S
        assert proposal.no_contact == [i for i, c in enumerate(proposal.point_contact) if c is None]

    def test_contact_capacity_one_spreads_contacts(self, population: Population) -> None:
        p = buddies.propose(
            population.graph, population.snapper, **population.kwargs, max_groups_per_contact=1
        )
        used = [c for c in p.point_contact if c is not None]
        assert len(used) == len(set(used))

    def test_seeded_and_deterministic(
        self, population: Population, proposal: buddies.Proposal
    ) -> None:
        again = buddies.propose(population.graph, population.snapper, **population.kwargs)
        assert again.groups == proposal.groups
        assert again.point_contact == proposal.point_contact

    def test_keep_holds_published_groups_for_one_new_member(
        self, population: Population, proposal: buddies.Proposal
    ) -> None:
        kw = dict(population.kwargs)
        new = kw["n_members"]
        kw["n_members"] = new + 1
        kw["home_lon"] = [*kw["home_lon"], kw["home_lon"][0]]
        kw["home_lat"] = [*kw["home_lat"], kw["home_lat"][0]]
        again = buddies.propose(
            population.graph, population.snapper, **kw, keep=proposal.groups, seed=99
        )
        label = {m: gi for gi, g in enumerate(again.groups) for m in g}
        intact = sum(len({label.get(m) for m in g}) == 1 for g in proposal.groups)
        assert intact / len(proposal.groups) > 0.9

    def test_members_without_routes_grouped_by_home(self, monaco_walk: StreetGraph) -> None:
        snap = Snapper(monaco_walk)
        rng = np.random.default_rng(0)
        nodes = rng.choice(monaco_walk.n_nodes, 40, replace=False)
        p = buddies.propose(
            monaco_walk,
            snap,
            n_members=40,
            route_member=[],
            route_lines=[],
            route_days=[],
            route_start_s=[],
            route_end_s=[],
            home_lon=monaco_walk.lon[nodes],
            home_lat=monaco_walk.lat[nodes],
            defence=[0, 1],
        )
        assert p.groups and all(len(g) <= 10 for g in p.groups)
        assert p.quality.mean_shared_minutes == 0.0
