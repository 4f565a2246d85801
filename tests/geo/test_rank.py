"""Ranking by network ETA with skipped members, straight-line fallback, merging, speed factors."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from geo.graph import StreetGraph
from geo.rank import haversine_m, merge_rankings, rank_on_graph, rank_straight_line, speed_factor
from geo.route import AnchorIndex
from tests.geo.test_presence import _grid


def _reference(graph: StreetGraph, target: int, member, node, factor, offset_s: float):  # type: ignore[no-untyped-def]
    """Best ETA per member from NetworkX distances to the target."""
    dist = nx.single_source_dijkstra_path_length(
        graph.to_networkx().reverse(copy=False), target, weight="travel_time_s"
    )
    best: dict[int, float] = {}
    for m, n, f in zip(member, node, factor, strict=True):
        if n in dist:
            eta = offset_s + f * dist[n]
            best[m] = min(best.get(m, np.inf), eta)
    return best


class TestRankOnGraph:
    def setup_method(self) -> None:
        self.g = _grid(7)
        rng = np.random.default_rng(3)
        self.member = rng.integers(100, 130, size=60)
        self.node = rng.integers(0, self.g.n_nodes, size=60)
        self.factor = rng.uniform(0.5, 2.0, size=60)
        self.anchors = AnchorIndex.build(self.g.n_nodes, self.member, self.node, None, self.factor)

    def test_matches_networkx_with_offset(self) -> None:
        ref = _reference(self.g, 24, self.member, self.node, self.factor, 90.0)
        members, etas = rank_on_graph(
            self.g, 24, self.anchors, k=None, max_eta_s=1e9, offset_s=90.0
        )
        assert set(members.tolist()) == set(ref)
        for m, e in zip(members.tolist(), etas.tolist(), strict=True):
            assert e == pytest.approx(ref[m], abs=1e-3)
        assert np.all(np.diff(etas) >= 0)

    def test_skipped_members_leave_k_others(self) -> None:
        ref = _reference(self.g, 24, self.member, self.node, self.factor, 0.0)
        order = sorted(ref, key=ref.__getitem__)
        skip = order[:3]
        members, _ = rank_on_graph(self.g, 24, self.anchors, k=5, max_eta_s=1e9, skip=skip)
        assert len(members) == 5
        assert not set(members.tolist()) & set(skip)
        assert [ref[m] for m in members.tolist()] == pytest.approx(
            [ref[m] for m in order[3:8]], abs=1e-3
        )

    def test_offset_counts_against_the_bound(self) -> None:
        members, etas = rank_on_graph(
            self.g, 24, self.anchors, k=None, max_eta_s=100.0, offset_s=90.0
        )
        assert members.size > 0
        assert np.all(etas <= 100.0)
        none, _ = rank_on_graph(self.g, 24, self.anchors, k=None, max_eta_s=80.0, offset_s=90.0)
        assert none.size == 0


class TestStraightLine:
    def test_haversine_known_distance(self) -> None:
        # one degree of latitude on the mean sphere
        assert float(haversine_m(0, 0, 0, 1)) == pytest.approx(111_195, rel=1e-4)

    def test_best_anchor_per_member_then_by_eta(self) -> None:
        lon = np.array([24.95, 24.94, 24.941, 24.99])
        lat = np.array([60.17, 60.17, 60.17, 60.17])
        members, etas = rank_straight_line(
            [1, 1, 2, 3],
            lon,
            lat,
            target_lon=24.94,
            target_lat=60.17,
            speed_mps=np.array([1.0, 1.0, 2.0, 1.0]),
            k=None,
            max_eta_s=1e9,
            offset_s=10.0,
        )
        assert members.tolist() == [1, 2, 3]
        assert etas[0] == pytest.approx(10.0)
        assert etas[1] == pytest.approx(10.0 + float(haversine_m(24.941, 60.17, 24.94, 60.17)) / 2)

    def test_limit_and_bound(self) -> None:
        lon = np.array([24.941, 24.942, 24.943])
        lat = np.full(3, 60.17)
        members, _ = rank_straight_line(
            [1, 2, 3],
            lon,
            lat,
            target_lon=24.94,
            target_lat=60.17,
            speed_mps=1.0,
            k=2,
            max_eta_s=1e9,
        )
        assert members.tolist() == [1, 2]
        members, _ = rank_straight_line(
            [1, 2, 3],
            lon,
            lat,
            target_lon=24.94,
            target_lat=60.17,
            speed_mps=1.0,
            k=None,
            max_eta_s=80.0,
        )
        assert members.tolist() == [1]


class TestMerge:
    def test_merge_by_eta_keeps_each_member_once(self) -> None:
        members, etas, part = merge_rankings(
            [(np.array([1, 2]), np.array([5.0, 9.0])), (np.array([3, 2]), np.array([6.0, 7.0]))],
            limit=None,
        )
        assert members.tolist() == [1, 3, 2]
        assert etas.tolist() == [5.0, 6.0, 7.0]
        assert part.tolist() == [0, 1, 1]

    def test_limit(self) -> None:
        members, _, _ = merge_rankings([(np.array([1, 2, 3]), np.array([3.0, 1.0, 2.0]))], limit=2)
        assert members.tolist() == [2, 3]


class TestSpeedFactor:
    def test_factor_is_mode_over_member_speed_clipped(self) -> None:
        f = speed_factor(1.4, np.array([np.nan, 0.7, 2.8, 0.01, 100.0]))
        assert f.tolist() == pytest.approx([1.0, 2.0, 0.5, 4.0, 0.25])
