"""geo.coverage: k = 3 fields, p_covered and cells against NetworkX on Monaco; greedy vs ILP."""

from __future__ import annotations

import math
import warnings
from typing import Any

import h3
import networkx as nx
import numpy as np
import pulp
import pytest

from geo import coverage as gc
from geo.graph import StreetGraph
from geo.snap import Snapper

MOB_S = 90.0
THRESHOLD_S = 300.0


def _nx_field(
    graph: StreetGraph, nodes: np.ndarray, ids: np.ndarray, *, k: int, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: one NetworkX Dijkstra per responder (its anchors as sources)."""
    g = graph.to_networkx()
    per_node: list[list[tuple[float, int]]] = [[] for _ in range(graph.n_nodes)]
    for rid in np.unique(ids).tolist():
        src = set(nodes[ids == rid].tolist())
        dist = nx.multi_source_dijkstra_path_length(
            g, src, cutoff=cutoff - MOB_S, weight="travel_time_s"
        )
        for v, d in dist.items():
            per_node[v].append((d + MOB_S, rid))
    times = np.full((graph.n_nodes, k), np.inf)
    src_out = np.full((graph.n_nodes, k), -1)
    for v, labels in enumerate(per_node):
        labels.sort()
        for j, (t, r) in enumerate(labels[:k]):
            times[v, j], src_out[v, j] = t, r
    return times, src_out


@pytest.fixture(scope="module")
def responders(monaco: dict[str, StreetGraph]) -> tuple[np.ndarray, np.ndarray]:
    """60 responders, a third of them on two anchors (a route's nodes)."""
    rng = np.random.default_rng(7)
    g = monaco["walk"]
    ids = np.concatenate([np.arange(60), np.arange(20)])
    nodes = rng.choice(g.n_nodes, ids.size, replace=False)
    return nodes, ids


class TestField:
    def test_k3_field_equals_networkx_on_monaco(
        self, monaco: dict[str, StreetGraph], responders: tuple[np.ndarray, np.ndarray]
    ) -> None:
        g = monaco["walk"]
        nodes, ids = responders
        cutoff = 3 * THRESHOLD_S
        f = gc.mode_field(
            g, nodes, ids, labels=3, max_time_s=cutoff, offset_s=np.full(ids.size, MOB_S)
        )
        ref_t, _ = _nx_field(g, nodes, ids, k=3, cutoff=cutoff)
        np.testing.assert_allclose(f.times_s, ref_t, rtol=1e-5, atol=1e-2)

    def test_one_search_many_labels_near_and_k_far_equals_networkx(
        self, monaco: dict[str, StreetGraph], responders: tuple[np.ndarray, np.ndarray]
    ) -> None:
        # what the map asks: 8 labels within the limit, the 3 nearest out to 3 x the limit
        g = monaco["walk"]
        nodes, ids = responders
        cutoff = 3 * THRESHOLD_S
        f = gc.mode_field(
            g,
            nodes,
            ids,
            labels=8,
            max_time_s=cutoff,
            offset_s=np.full(ids.size, MOB_S),
            far_labels=3,
            near_time_s=THRESHOLD_S,
        )
        ref_t, _ = _nx_field(g, nodes, ids, k=8, cutoff=cutoff)
        np.testing.assert_allclose(f.times_s[:, :3], ref_t[:, :3], rtol=1e-5, atol=1e-2)
        near = np.where(ref_t[:, 3:] <= THRESHOLD_S, ref_t[:, 3:], np.inf)
        np.testing.assert_allclose(f.times_s[:, 3:], near, rtol=1e-5, atol=1e-2)
        far = ref_t[:, 2]
        assert np.isfinite(near).any() and (np.isfinite(far) & (far > THRESHOLD_S)).any()

    def test_p_covered_and_cells_equal_brute_force(
        self, monaco: dict[str, StreetGraph], responders: tuple[np.ndarray, np.ndarray]
    ) -> None:
        g = monaco["walk"]
        nodes, ids = responders
        labels = 60  # every responder: p is exact
        f = gc.mode_field(
            g, nodes, ids, labels=labels, max_time_s=THRESHOLD_S, offset_s=np.full(ids.size, MOB_S)
        )
        ref_t, ref_s = _nx_field(g, nodes, ids, k=labels, cutoff=THRESHOLD_S)
        within = ref_t <= THRESHOLD_S
        p_ref = 1 - np.prod(np.where(within, 1 - 0.35, 1.0), axis=1)
        acc = np.full(60, 0.35)
        np.testing.assert_allclose(gc.p_covered(f, acc, threshold_s=THRESHOLD_S), p_ref, atol=1e-9)
        np.testing.assert_allclose(gc.p_covered(f, 0.35, threshold_s=THRESHOLD_S), p_ref, atol=1e-9)
        cells = gc.cell_index(g, 9)
        street = gc.node_street_m(g)
        p = gc.p_covered(f, 0.35, threshold_s=THRESHOLD_S)
        stats = gc.cell_stats(cells, f, p, street, k=3, threshold_s=THRESHOLD_S, target=0.9)
        for i, cell in enumerate(cells.ids):
            mine = np.flatnonzero(cells.cell == i)
            assert h3.latlng_to_cell(g.lat[mine[0]], g.lon[mine[0]], 9) == cell
            reached = {int(s) for s in ref_s[mine][within[mine]].ravel() if s >= 0}
            assert stats.responders_within[i] == len(reached)
            assert stats.street_m[i] == pytest.approx(street[mine].sum())
            w = street[mine]
            expect = (w * p_ref[mine]).sum() / w.sum() if w.sum() > 0 else 0.0
            assert stats.p_covered[i] == pytest.approx(expect, abs=1e-9)
            assert stats.t1_s[i] == pytest.approx(np.median(ref_t[mine, 0]), rel=1e-5)
            assert stats.gap[i] == (len(reached) < 3 or stats.p_covered[i] < 0.9)

    def test_few_labels_decide_gaps_exactly(
        self, monaco: dict[str, StreetGraph], responders: tuple[np.ndarray, np.ndarray]
    ) -> None:
        g = monaco["walk"]
        nodes, ids = responders
        few = gc.labels_for_target(3, 0.35, 0.9)
        assert few == 6
        gaps = []
        for lab in (few, 60):
            f = gc.mode_field(
                g, nodes, ids, labels=lab, max_time_s=THRESHOLD_S, offset_s=np.full(ids.size, MOB_S)
            )
            p = gc.p_covered(f, 0.35, threshold_s=THRESHOLD_S)
            node_ok = p >= 0.9
            gaps.append((node_ok, f.times_s[:, :3]))
        np.testing.assert_array_equal(gaps[0][0], gaps[1][0])
        np.testing.assert_array_equal(gaps[0][1], gaps[1][1])

    def test_street_length_sums_to_the_networks(self, monaco: dict[str, StreetGraph]) -> None:
        g = monaco["walk"]
        nxg = g.to_networkx().to_undirected()
        total = sum(
            gc.haversine_m(
                np.array([g.lon[u]]),
                np.array([g.lat[u]]),
                np.array([g.lon[v]]),
                np.array([g.lat[v]]),
            )[0]
            for u, v in nxg.edges()
        )
        assert gc.node_street_m(g).sum() == pytest.approx(total, rel=1e-9)

    def test_mode_all_merges_transferred_fields(
        self, monaco: dict[str, StreetGraph], responders: tuple[np.ndarray, np.ndarray]
    ) -> None:
        walk, drive = monaco["walk"], monaco["drive"]
        nodes, ids = responders
        rng = np.random.default_rng(3)
        d_nodes = rng.choice(drive.n_nodes, 10, replace=False)
        d_ids = np.arange(100, 110)
        fw = gc.mode_field(
            walk, nodes, ids, labels=3, max_time_s=900, offset_s=np.full(ids.size, MOB_S)
        )
        fd = gc.mode_field(
            drive, d_nodes, d_ids, labels=3, max_time_s=900, offset_s=np.full(10, MOB_S)
        )
        node, dist = Snapper(drive).snap(walk.lon, walk.lat)
        approach = np.asarray(dist) / 1.4
        moved = gc.transfer(fd, np.asarray(node), approach, reachable=np.asarray(dist) <= 300)
        merged = gc.merge_fields([fw, moved], labels=3)
        both = np.sort(np.concatenate([fw.times_s, moved.times_s], axis=1), axis=1)[:, :3]
        np.testing.assert_array_equal(merged.times_s, both)
        assert (merged.times_s[:, 0] <= fw.times_s[:, 0]).all()
        assert ((merged.sources >= 100) | (merged.sources < 60)).all()


def _ilp(
    indptr: np.ndarray, indices: np.ndarray, deficit: np.ndarray, weight: np.ndarray, n: int
) -> float:
    """Exact optimum: binary site z_s, covered node-hour y_hx with deficit * y <= sum z."""
    prob = pulp.LpProblem("recruit", pulp.LpMaximize)
    z = [prob.add_variable(f"z{s}", cat="Binary") for s in range(indptr.size - 1)]
    covering: dict[int, list[int]] = {}
    for s in range(indptr.size - 1):
        for x in indices[indptr[s] : indptr[s + 1]].tolist():
            covering.setdefault(x, []).append(s)
    objective = []
    for h in range(deficit.shape[0]):
        for x, sites in covering.items():
            d = int(deficit[h, x])
            if d == 0 or d > n or weight[h, x] <= 0:
                continue
            y = prob.add_variable(f"y{h}_{x}", cat="Binary")
            prob += d * y <= pulp.lpSum(z[s] for s in sites)
            objective.append(weight[h, x] * y)
    prob += pulp.lpSum(objective)
    prob += pulp.lpSum(z) == n
    with warnings.catch_warnings():
        # PuLP 3.3 announces that its bundled CBC moves to an extra in 4.0; it is what we use.
        warnings.simplefilter("ignore", DeprecationWarning)
        prob.solve(pulp.PULP_CBC_CMD(msg=False))
    assert pulp.LpStatus[prob.status] == "Optimal"
    return float(pulp.value(prob.objective) or 0.0)


class TestRecruit:
    @pytest.mark.parametrize("k", [1, 2])
    def test_greedy_reaches_1_minus_1_over_e_of_the_ilp_optimum(
        self, monaco: dict[str, StreetGraph], k: int, record_property: Any
    ) -> None:
        g = monaco["walk"]
        rng = np.random.default_rng(11)
        street = gc.node_street_m(g)
        # Two hour classes with different responders present.
        deficits = []
        for _ in range(2):
            src = rng.choice(g.n_nodes, 15, replace=False)
            f = gc.mode_field(
                g, src, np.arange(15), labels=k, max_time_s=THRESHOLD_S, offset_s=np.full(15, MOB_S)
            )
            deficits.append(np.maximum(k - (f.times_s <= THRESHOLD_S).sum(axis=1), 0))
        deficit = np.stack(deficits).astype(np.int64)
        weight = np.stack([street, street]) / 2
        cells = gc.cell_index(g, 9)
        centres = np.array([gc.cell_center(c) for c in cells.ids])
        sites, _ = Snapper(g).snap(centres[:, 0], centres[:, 1])
        sites = np.asarray(sites)[:40]
        indptr, indices = gc.reach_sets(g, sites, limit_s=THRESHOLD_S - MOB_S)
        n = 4
        picked = gc.greedy_recruit(indptr, indices, deficit, weight, n=n)
        greedy = float(picked.gain.sum())
        best = _ilp(indptr, indices, deficit, weight, n)
        ratio = greedy / best if best > 0 else 1.0
        record_property(f"greedy_over_optimum_k{k}", ratio)
        print(f"k={k}: greedy {greedy:.0f} / optimum {best:.0f} = {ratio:.3f}")
        assert best > 0
        assert greedy <= best + 1e-6
        assert ratio >= 1 - 1 / math.e

    def test_reach_sets_equal_networkx(self, monaco: dict[str, StreetGraph]) -> None:
        g = monaco["walk"]
        nxg = g.to_networkx()
        sites = np.array([0, 17, g.n_nodes - 1])
        indptr, indices = gc.reach_sets(g, sites, limit_s=210.0, chunk=2)
        for i, s in enumerate(sites.tolist()):
            ref = nx.single_source_dijkstra_path_length(
                nxg, s, cutoff=210.0, weight="travel_time_s"
            )
            assert set(indices[indptr[i] : indptr[i + 1]].tolist()) == set(ref)

    def test_gain_after_a_pick_counts_the_pick(self) -> None:
        # two sites reaching the same deficit-1 node: the second gains nothing
        indptr = np.array([0, 2, 4, 5])
        indices = np.array([0, 1, 0, 1, 2])
        deficit = np.array([[1, 1, 1]])
        weight = np.array([[10.0, 10.0, 5.0]])
        picked = gc.greedy_recruit(indptr, indices, deficit, weight, n=3)
        assert picked.picks.tolist() == [0, 2]
        assert picked.gain.tolist() == [20.0, 5.0]


class TestPrivacyHelpers:
    def test_times_round_to_the_minute_and_inf_is_none(self) -> None:
        assert gc.round_minute_s(89.0) == 60.0
        assert gc.round_minute_s(91.0) == 120.0
        assert gc.round_minute_s(math.inf) is None

    @pytest.mark.parametrize("res", [6, 11])
    def test_resolution_out_of_range(self, monaco: dict[str, StreetGraph], res: int) -> None:
        with pytest.raises(ValueError, match="res"):
            gc.cell_index(monaco["walk"], res)
