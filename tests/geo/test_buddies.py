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


def _blocks(sizes: list[int], *, inside: float = 0.9, between: float = 0.0) -> csr_matrix:
    """A similarity of cliques (``inside`` within each), ``between`` across all of them."""
    n = sum(sizes)
    w = np.full((n, n), between)
    at = 0
    for s in sizes:
        w[at : at + s, at : at + s] = inside
        at += s
    np.fill_diagonal(w, 0)
    return csr_matrix(w)


def _inside_weight(weight: csr_matrix, groups: list[list[int]]) -> float:
    label = np.full(weight.shape[0], -1)
    for gi, g in enumerate(groups):
        label[g] = gi
    c = weight.tocoo()
    same = (label[c.row] >= 0) & (label[c.row] == label[c.col])
    return float(c.data[same].sum())


class TestPartition:
    def test_cliques_are_the_groups(self) -> None:
        w = _blocks([4, 6, 3, 5], between=0.01)
        groups, unplaced = buddies.partition(w)
        assert groups == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17]]
        assert unplaced == []

    def test_an_oversized_community_is_split_within_the_cap(self) -> None:
        # one clique of 25: Leiden finds one community; every part must still fit
        groups, unplaced = buddies.partition(_blocks([25]))
        assert all(3 <= len(g) <= 10 for g in groups)
        assert sorted(m for g in groups for m in g) == list(range(25))
        assert unplaced == []
        small, _ = buddies.partition(_blocks([25]), max_size=4, min_size=2)
        assert all(2 <= len(g) <= 4 for g in small)

    def test_small_groups_join_the_group_they_overlap_most(self) -> None:
        # a pair linked weakly to a clique of 4 and more weakly to a clique of 3
        w = _blocks([4, 3, 2]).toarray()
        w[7:9, 0:4] = w[0:4, 7:9] = 0.05
        w[7:9, 4:7] = w[4:7, 7:9] = 0.02
        groups, _ = buddies.partition(csr_matrix(w))
        assert [0, 1, 2, 3, 7, 8] in groups and [4, 5, 6] in groups

    def test_no_room_leaves_a_small_group_or_members_unplaced_not_over_the_cap(self) -> None:
        w = _blocks([10, 1]).toarray()
        w[10, :10] = w[:10, 10] = 0.05
        groups, unplaced = buddies.partition(csr_matrix(w))
        assert groups == [list(range(10))]
        assert unplaced == [10]

    def test_unlinked_members_are_unplaced(self) -> None:
        w = _blocks([3, 1, 1])
        groups, unplaced = buddies.partition(w)
        assert groups == [[0, 1, 2]]
        assert unplaced == [3, 4]

    def test_kept_groups_stay_apart_and_whole_though_linked(self) -> None:
        # without keep two cliques linked as strongly as inside form one group of 8
        w = _blocks([8])
        assert buddies.partition(w)[0] == [list(range(8))]
        groups, _ = buddies.partition(w, keep=[[0, 2, 4, 6], [1, 3, 5, 7]])
        assert groups == [[0, 2, 4, 6], [1, 3, 5, 7]]

    def test_a_new_member_joins_a_kept_group_with_room(self) -> None:
        w = _blocks([5]).toarray()
        groups, _ = buddies.partition(csr_matrix(w), keep=[[0, 1, 2, 3]])
        assert groups == [[0, 1, 2, 3, 4]]

    def test_members_move_to_the_group_they_link_to_most(self) -> None:
        from geo.buddies._kernels import refine_kernel

        w = _blocks([4, 4], between=0.0).toarray()
        w[3, :3] = w[:3, 3] = 0.0  # member 3 belongs with the second clique
        w[3, 4:8] = w[4:8, 3] = 0.9
        wc = csr_matrix(w)
        label = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.int64)
        before = _inside_weight(wc, [[0, 1, 2, 3], [4, 5, 6, 7]])
        got = refine_kernel(
            wc.indptr.astype(np.int64), wc.indices.astype(np.int64), wc.data, label.copy(),
            np.zeros(8, dtype=np.bool_), 2, 10, 3, 10,
        )  # fmt: skip
        assert got.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
        assert _inside_weight(wc, [[0, 1, 2], [3, 4, 5, 6, 7]]) > before
        # a kept member, or one whose group would fall below min_size, stays
        fixed = np.zeros(8, dtype=np.bool_)
        fixed[3] = True
        held = refine_kernel(
            wc.indptr.astype(np.int64), wc.indices.astype(np.int64), wc.data, label.copy(),
            fixed, 2, 10, 3, 10,
        )  # fmt: skip
        assert held.tolist() == label.tolist()
        held = refine_kernel(
            wc.indptr.astype(np.int64), wc.indices.astype(np.int64), wc.data, label.copy(),
            np.zeros(8, dtype=np.bool_), 2, 10, 4, 10,
        )  # fmt: skip
        assert held.tolist() == label.tolist()

    def test_seeded_whatever_the_thread(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        rng = np.random.default_rng(5)
        a = rng.random((300, 300)) * (rng.random((300, 300)) < 0.03)
        w = csr_matrix(np.maximum(a, a.T))
        want = buddies.partition(w, seed=4)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: buddies.partition(w, seed=4), range(8)))
        assert all(g == want for g in got)


def _exact_contacts(cost: np.ndarray, capacity: int, max_eta_s: float) -> tuple[int, float]:
    """Most groups with a contact, then least total time: the ILP optimum (PuLP, CBC)."""
    import warnings

    import pulp

    prob = pulp.LpProblem("contacts", pulp.LpMaximize)
    x = {
        (g, d): prob.add_variable(f"x{g}_{d}", cat="Binary")
        for g in range(cost.shape[0])
        for d in range(cost.shape[1])
        if cost[g, d] <= max_eta_s
    }
    for g in range(cost.shape[0]):
        prob += pulp.lpSum(v for (gg, _), v in x.items() if gg == g) <= 1
    for d in range(cost.shape[1]):
        prob += pulp.lpSum(v for (_, dd), v in x.items() if dd == d) <= capacity
    big = 1e6
    prob += pulp.lpSum((big - cost[g, d]) * v for (g, d), v in x.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        prob.solve(pulp.PULP_CBC_CMD(msg=False))
    assert pulp.LpStatus[prob.status] == "Optimal"
    chosen = [(g, d) for (g, d), v in x.items() if (v.value() or 0) > 0.5]
    return len(chosen), float(sum(cost[g, d] for g, d in chosen))


class TestAssignContacts:
    @pytest.mark.parametrize(("capacity", "seed"), [(1, 0), (2, 1), (3, 2)])
    def test_matches_the_exact_optimum_within_capacity(self, capacity: int, seed: int) -> None:
        g = _grid(8)
        rng = np.random.default_rng(seed)
        groups = [rng.choice(g.n_nodes, int(rng.integers(1, 5)), replace=False) for _ in range(9)]
        defence = rng.choice(g.n_nodes, 4, replace=False)
        max_eta = 240.0
        contact, eta = buddies.assign_contacts(
            g, groups, defence, max_groups_per_contact=capacity, max_eta_s=max_eta, candidates=4
        )
        a = csr_matrix((g.travel_time_s.astype(float), g.indices, g.indptr), shape=(64, 64))
        # positions beyond the search limit (twice the largest ETA) count at the limit
        t = np.minimum(dijkstra(a, indices=defence), 2 * max_eta)  # defence x nodes
        cost = np.array([[t[d, nodes].mean() for d in range(4)] for nodes in groups])
        used = [c for c in contact if c is not None]
        assert all(used.count(c) <= capacity for c in used)
        for gi, (c, e) in enumerate(zip(contact, eta, strict=True)):
            if c is not None:
                assert e == pytest.approx(cost[gi, c])
                assert e <= max_eta
        n_best, total_best = _exact_contacts(cost, capacity, max_eta)
        assert len(used) == n_best
        assert sum(e for e in eta if e is not None) == pytest.approx(total_best)
