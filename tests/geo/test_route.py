"""Bounded reverse Dijkstra and k-nearest fields against hand-computed answers and NetworkX."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.graph import StreetGraph
from geo.route import AnchorIndex, k_nearest_field, nearest_members

# --------------------------------------------------------------------------- hand-built grid


def grid_graph(rows: int, cols: int, *, one_way_row: int | None = None) -> StreetGraph:
    """A rows x cols grid, node = r * cols + c, 10 s per block in both directions; on
    ``one_way_row`` the horizontal streets run east only."""
    u, v = [], []
    for r in range(rows):
        for c in range(cols):
            a = r * cols + c
            if c + 1 < cols:
                u.append(a), v.append(a + 1)
                if r != one_way_row:
                    u.append(a + 1), v.append(a)
            if r + 1 < rows:
                u += [a, a + cols]
                v += [a + cols, a]
    lon = np.tile(np.arange(cols) * 0.001, rows) + 24.9
    lat = np.repeat(np.arange(rows) * 0.001, cols) + 60.1
    return StreetGraph.from_edges("walk", u, v, np.full(len(u), 10.0), lon, lat)


class TestGrid:
    def test_manhattan_times_and_order(self) -> None:
        g = grid_graph(5, 5)
        target = 12  # centre (2, 2)
        nodes = np.arange(25)
        index = AnchorIndex.build(25, member=nodes + 100, node=nodes)
        members, eta = nearest_members(g, target, index, k=None, max_eta_s=math.inf)
        expected = {100 + n: 10.0 * (abs(n // 5 - 2) + abs(n % 5 - 2)) for n in nodes}
        assert sorted(members.tolist()) == sorted(expected)
        assert all(eta[i] == expected[m] for i, m in enumerate(members.tolist()))
        assert np.all(np.diff(eta) >= 0)

    def test_k_stops_at_the_kth_member(self) -> None:
        g = grid_graph(5, 5)
        index = AnchorIndex.build(25, member=[1, 2, 3, 4], node=[0, 6, 24, 13])
        members, eta = nearest_members(g, 12, index, k=2, max_eta_s=math.inf)
        assert members.tolist() == [4, 2] and eta.tolist() == [10.0, 20.0]

    def test_member_counted_once_at_best_anchor_with_offset_and_factor(self) -> None:
        g = grid_graph(5, 5)
        # member 7: far anchor (40 s) with no delay, near anchor (10 s) with 45 s delay
        # member 8: anchor 20 s away but slow (factor 3) -> 60 s
        index = AnchorIndex.build(
            25, member=[7, 7, 8], node=[0, 13, 2], offset_s=[0.0, 45.0, 0.0], factor=[1.0, 1.0, 3.0]
        )
        members, eta = nearest_members(g, 12, index, k=None, max_eta_s=math.inf)
        assert members.tolist() == [7, 8] and eta.tolist() == [40.0, 60.0]

    def test_offset_can_reorder_members(self) -> None:
        g = grid_graph(5, 5)
        index = AnchorIndex.build(25, member=[1, 2], node=[13, 0], offset_s=[100.0, 0.0])
        members, eta = nearest_members(g, 12, index, k=1, max_eta_s=math.inf)
        assert members.tolist() == [2] and eta.tolist() == [40.0]

    def test_max_eta_limits(self) -> None:
        g = grid_graph(5, 5)
        nodes = np.arange(25)
        index = AnchorIndex.build(25, member=nodes, node=nodes)
        members, eta = nearest_members(g, 12, index, k=None, max_eta_s=10.0)
        assert sorted(members.tolist()) == [7, 11, 12, 13, 17] and eta.max() == 10.0
        members, _ = nearest_members(g, 12, index, k=100, max_eta_s=0.0)
        assert members.tolist() == [12]

    def test_one_way_row_uses_reversed_graph(self) -> None:
        g = grid_graph(3, 5, one_way_row=0)
        # row 0 runs east only: from node 4 to node 0 one must detour through row 1
        index = AnchorIndex.build(15, member=[1, 2], node=[4, 0])
        members, eta = nearest_members(g, 0, index, k=None, max_eta_s=math.inf)
        assert dict(zip(members.tolist(), eta.tolist(), strict=True)) == {2: 0.0, 1: 60.0}
        members, eta = nearest_members(g, 4, index, k=None, max_eta_s=math.inf)
        assert dict(zip(members.tolist(), eta.tolist(), strict=True)) == {1: 0.0, 2: 40.0}

    def test_unreachable_member_is_absent(self) -> None:
        g = StreetGraph.from_edges("drive", [0, 1], [1, 0], [5.0, 5.0], [0, 0, 0], [0, 0, 0])
        index = AnchorIndex.build(3, member=[1, 2], node=[1, 2])
        members, eta = nearest_members(g, 0, index, k=5, max_eta_s=math.inf)
        assert members.tolist() == [1] and eta.tolist() == [5.0]

    def test_empty_index(self) -> None:
        g = grid_graph(2, 2)
        members, eta = nearest_members(g, 0, AnchorIndex.build(4, [], []), k=3, max_eta_s=60.0)
        assert members.size == eta.size == 0

    def test_bad_inputs(self) -> None:
        g = grid_graph(2, 2)
        index = AnchorIndex.build(4, [1], [0])
        with pytest.raises(ValueError, match="target"):
            nearest_members(g, 4, index, k=1, max_eta_s=10.0)
        with pytest.raises(ValueError, match="k must"):
            nearest_members(g, 0, index, k=0, max_eta_s=10.0)
        with pytest.raises(ValueError, match="anchor index"):
            nearest_members(g, 0, AnchorIndex.build(5, [1], [0]), k=1, max_eta_s=10.0)
        with pytest.raises(ValueError, match="offset_s"):
            AnchorIndex.build(4, [1], [0], offset_s=[-1.0])
        with pytest.raises(ValueError, match="factor"):
            AnchorIndex.build(4, [1], [0], factor=[0.0])
        with pytest.raises(ValueError, match="anchor nodes"):
            AnchorIndex.build(4, [1], [4])

    def test_field_on_grid(self) -> None:
        g = grid_graph(3, 3)
        # source 1 sits on two corners; source 2 on the centre
        times, ids = k_nearest_field(g, [0, 8, 4], [1, 1, 2], k=3, return_sources=True)
        assert times.shape == (9, 3) and times.dtype == np.float32
        assert times[4].tolist() == [0.0, 20.0, math.inf]  # centre: itself, then source 1
        assert ids[4].tolist() == [2, 1, -1]
        assert times[0].tolist() == [0.0, 20.0, math.inf]
        assert times[2].tolist() == [20.0, 20.0, math.inf]  # corner 2: both sources 20 s away
        assert times[1].tolist() == [10.0, 10.0, math.inf]
        limited = k_nearest_field(g, [0, 8, 4], [1, 1, 2], k=2, max_time_s=10.0)
        assert limited[2].tolist() == [math.inf, math.inf]
        assert limited[1].tolist() == [10.0, 10.0]

    def test_field_directions_differ_on_one_way_streets(self) -> None:
        g = grid_graph(3, 5, one_way_row=0)
        from_src = k_nearest_field(g, [0], [1], k=1)
        to_src = k_nearest_field(g, [0], [1], k=1, direction="to_sources")
        assert from_src[4, 0] == 40.0  # 0 -> 4 straight east
        assert to_src[4, 0] == 60.0  # 4 -> 0 detours through row 1
        with pytest.raises(ValueError, match="direction"):
            k_nearest_field(g, [0], [1], k=1, direction="toward")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- references


def brute_force_etas(
    reversed_g: nx.DiGraph,
    target: int,
    member: np.ndarray,
    node: np.ndarray,
    offset: np.ndarray,
    factor: np.ndarray,
) -> dict[int, float]:
    dist = nx.single_source_dijkstra_path_length(reversed_g, target, weight="travel_time_s")
    best: dict[int, float] = {}
    for m, v, o, f in zip(
        member.tolist(), node.tolist(), offset.tolist(), factor.tolist(), strict=True
    ):
        if v in dist:
            best[m] = min(best.get(m, math.inf), f * dist[v] + o)
    return best


def assert_ranking_matches(
    members: np.ndarray,
    eta: np.ndarray,
    best: dict[int, float],
    k: int | None,
    max_eta: float,
    tol: float,
) -> None:
    ref = sorted(e for e in best.values() if e <= max_eta)
    if k is not None:
        ref = ref[:k]
    assert len(members) == len(set(members.tolist())) == len(ref)
    np.testing.assert_allclose(eta, ref, atol=tol)
    for m, e in zip(members.tolist(), eta.tolist(), strict=True):
        assert abs(best[m] - e) <= tol
    if ref:  # the top set agrees, ties at the k-th ETA aside
        cut = ref[-1] - tol
        sure = {m for m, e in best.items() if e < cut}
        assert sure <= set(members.tolist())


def brute_force_field(
    g: nx.DiGraph, nodes: np.ndarray, ids: np.ndarray, offset: np.ndarray, k: int, max_time: float
) -> np.ndarray:
    per_source: dict[int, dict[int, float]] = {}
    for v, s, o in zip(nodes.tolist(), ids.tolist(), offset.tolist(), strict=True):
        d = nx.single_source_dijkstra_path_length(g, v, weight="travel_time_s")
        acc = per_source.setdefault(s, {})
        for x, t in d.items():
            acc[x] = min(acc.get(x, math.inf), t + o)
    out = np.full((g.number_of_nodes(), k), np.inf)
    for x in range(g.number_of_nodes()):
        times = sorted(t for acc in per_source.values() if (t := acc.get(x, math.inf)) <= max_time)
        out[x, : min(k, len(times))] = times[:k]
    return out


@st.composite
def random_graphs(draw: st.DrawFn) -> StreetGraph:
    n = draw(st.integers(2, 25))
    m = draw(st.integers(0, 4 * n))
    u = draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    v = draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    w = draw(
        st.lists(
            st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 7.25, 10.0, 60.0]), min_size=m, max_size=m
        )
    )
    return StreetGraph.from_edges("drive", u, v, w, np.zeros(n), np.zeros(n))


class TestProperties:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(graph=random_graphs(), data=st.data())
    def test_nearest_members_equals_networkx(self, graph: StreetGraph, data: st.DataObject) -> None:
        n = graph.n_nodes
        a = data.draw(st.integers(0, 3 * n))
        member = np.array(
            data.draw(st.lists(st.integers(0, 8), min_size=a, max_size=a)), dtype=np.int64
        )
        node = np.array(
            data.draw(st.lists(st.integers(0, n - 1), min_size=a, max_size=a)), dtype=np.int64
        )
        offset = np.array(
            data.draw(st.lists(st.sampled_from([0.0, 1.0, 5.0, 30.0]), min_size=a, max_size=a))
        )
        factor = np.array(
            data.draw(st.lists(st.sampled_from([0.5, 1.0, 1.5, 4.0]), min_size=a, max_size=a))
        )
        target = data.draw(st.integers(0, n - 1))
        k = data.draw(st.one_of(st.none(), st.integers(1, 6)))
        max_eta = data.draw(st.sampled_from([0.0, 5.0, 20.0, math.inf]))
        index = AnchorIndex.build(n, member, node, offset, factor)
        members, eta = nearest_members(graph, target, index, k=k, max_eta_s=max_eta)
        best = brute_force_etas(
            graph.to_networkx().reverse(copy=True), target, member, node, offset, factor
        )
        assert_ranking_matches(members, eta, best, k, max_eta, 1e-9)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(graph=random_graphs(), data=st.data())
    def test_k_nearest_field_equals_brute_force(
        self, graph: StreetGraph, data: st.DataObject
    ) -> None:
        n = graph.n_nodes
        s = data.draw(st.integers(0, 8))
        nodes = np.array(
            data.draw(st.lists(st.integers(0, n - 1), min_size=s, max_size=s)), dtype=np.int64
        )
        ids = np.array(
            data.draw(st.lists(st.integers(0, 4), min_size=s, max_size=s)), dtype=np.int64
        )
        offset = np.array(
            data.draw(st.lists(st.sampled_from([0.0, 2.0, 9.0]), min_size=s, max_size=s))
        )
        k = data.draw(st.integers(1, 4))
        max_time = data.draw(st.sampled_from([5.0, 30.0, math.inf]))
        direction = data.draw(st.sampled_from(["from_sources", "to_sources"]))
        times = k_nearest_field(
            graph, nodes, ids, k=k, max_time_s=max_time, direction=direction, offset_s=offset
        )
        g = graph.to_networkx()
        if direction == "to_sources":
            g = g.reverse(copy=True)
        np.testing.assert_allclose(
            times, brute_force_field(g, nodes, ids, offset, k, max_time), atol=1e-4
        )

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(graph=random_graphs(), data=st.data())
    def test_fewer_labels_beyond_near_time_equal_brute_force(
        self, graph: StreetGraph, data: st.DataObject
    ) -> None:
        n = graph.n_nodes
        s = data.draw(st.integers(1, 8))
        nodes = np.array(
            data.draw(st.lists(st.integers(0, n - 1), min_size=s, max_size=s)), dtype=np.int64
        )
        ids = np.array(
            data.draw(st.lists(st.integers(0, 5), min_size=s, max_size=s)), dtype=np.int64
        )
        offset = np.array(
            data.draw(st.lists(st.sampled_from([0.0, 2.0, 9.0]), min_size=s, max_size=s))
        )
        k = data.draw(st.integers(2, 5))
        far_k = data.draw(st.integers(1, k))
        near = data.draw(st.sampled_from([0.0, 5.0, 12.0, 30.0]))
        max_time = data.draw(st.sampled_from([30.0, math.inf]))
        times = k_nearest_field(
            graph, nodes, ids, k=k, max_time_s=max_time, offset_s=offset, far_k=far_k,
            near_time_s=near,
        )  # fmt: skip
        ref = brute_force_field(graph.to_networkx(), nodes, ids, offset, k, max_time)
        np.testing.assert_allclose(times[:, :far_k], ref[:, :far_k], atol=1e-4)
        np.testing.assert_allclose(
            times[:, far_k:], np.where(ref[:, far_k:] <= near, ref[:, far_k:], np.inf), atol=1e-4
        )

    def test_far_k_out_of_range_is_refused(self) -> None:
        g = grid_graph(2, 2)
        for far_k in (0, 4):
            with pytest.raises(ValueError, match="far_k"):
                k_nearest_field(g, [0], [1], k=3, far_k=far_k)


# --------------------------------------------------------------------------- real extracts


def check_extract_ranking(graph: StreetGraph, n_targets: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = graph.n_nodes
    a = 3 * 600
    member = rng.integers(0, 600, a)
    node = rng.integers(0, n, a)
    offset = rng.uniform(0, 90, a)
    factor = rng.choice([1.0, 1.0, 1.2, 0.8], a)
    index = AnchorIndex.build(n, member, node, offset, factor)
    reversed_g = graph.to_networkx().reverse(copy=True)
    for target in rng.integers(0, n, n_targets).tolist():
        best = brute_force_etas(reversed_g, target, member, node, offset, factor)
        for k, max_eta in ((10, math.inf), (None, 300.0), (25, 600.0)):
            members, eta = nearest_members(graph, target, index, k=k, max_eta_s=max_eta)
            assert_ranking_matches(members, eta, best, k, max_eta, 1e-3)


def check_extract_field(graph: StreetGraph, seed: int) -> None:
    rng = np.random.default_rng(seed)
    nodes = rng.integers(0, graph.n_nodes, 50)
    g = graph.to_networkx()
    times = k_nearest_field(graph, nodes, np.arange(50), k=1)
    ref = nx.multi_source_dijkstra_path_length(g, set(nodes.tolist()), weight="travel_time_s")
    expected = np.array([ref.get(x, math.inf) for x in range(graph.n_nodes)])
    np.testing.assert_allclose(times[:, 0], expected, rtol=1e-6, atol=1e-3)
    to_src = k_nearest_field(graph, nodes, np.arange(50), k=1, direction="to_sources")
    ref = nx.multi_source_dijkstra_path_length(
        g.reverse(copy=True), set(nodes.tolist()), weight="travel_time_s"
    )
    expected = np.array([ref.get(x, math.inf) for x in range(graph.n_nodes)])
    np.testing.assert_allclose(to_src[:, 0], expected, rtol=1e-6, atol=1e-3)


class TestRealExtracts:
    @pytest.mark.parametrize("mode", ["walk", "bike", "drive"])
    def test_helsinki_ranking_equals_networkx(
        self, helsinki: dict[str, StreetGraph], mode: str
    ) -> None:
        check_extract_ranking(helsinki[mode], 150, seed=1)

    @pytest.mark.parametrize("mode", ["walk", "drive"])
    def test_monaco_ranking_equals_networkx(
        self, monaco: dict[str, StreetGraph], mode: str
    ) -> None:
        check_extract_ranking(monaco[mode], 150, seed=2)

    @pytest.mark.slow
    @pytest.mark.parametrize("mode", ["walk", "drive"])
    def test_malta_ranking_equals_networkx(self, malta: dict[str, StreetGraph], mode: str) -> None:
        check_extract_ranking(malta[mode], 200, seed=3)

    @pytest.mark.parametrize("mode", ["walk", "drive"])
    def test_monaco_field_k1_equals_networkx(
        self, monaco: dict[str, StreetGraph], mode: str
    ) -> None:
        check_extract_field(monaco[mode], seed=4)

    @pytest.mark.slow
    def test_malta_field_k1_equals_networkx(self, malta: dict[str, StreetGraph]) -> None:
        check_extract_field(malta["drive"], seed=5)

    def test_helsinki_field_k3_equals_brute_force(self, helsinki: dict[str, StreetGraph]) -> None:
        graph = helsinki["drive"]
        rng = np.random.default_rng(6)
        nodes = rng.integers(0, graph.n_nodes, 30)
        ids = rng.integers(0, 12, 30)  # several anchors per source
        offset = rng.uniform(0, 30, 30)
        times = k_nearest_field(graph, nodes, ids, k=3, offset_s=offset)
        expected = brute_force_field(graph.to_networkx(), nodes, ids, offset, 3, math.inf)
        np.testing.assert_allclose(times, expected, rtol=1e-6, atol=1e-3)
        assert np.isfinite(times).all()

    def test_concurrent_queries_agree_with_sequential(self, monaco: dict[str, StreetGraph]) -> None:
        graph = monaco["drive"]
        rng = np.random.default_rng(7)
        index = AnchorIndex.build(
            graph.n_nodes, rng.integers(0, 500, 1500), rng.integers(0, graph.n_nodes, 1500)
        )
        targets = rng.integers(0, graph.n_nodes, 200).tolist()

        def run(t: int) -> tuple[list[int], list[float]]:
            members, eta = nearest_members(graph, t, index, k=10, max_eta_s=900.0)
            return members.tolist(), eta.tolist()

        sequential = [run(t) for t in targets]
        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(pool.map(run, targets))
        assert [e for _, e in concurrent] == [e for _, e in sequential]
