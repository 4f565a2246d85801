"""Presence windows, quiet hours, anchor priority, zone and route nodes on hand-built graphs."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from geo import presence as gp
from geo.graph import StreetGraph
from geo.snap import Snapper

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
H = 3600


def _grid(
    n: int = 5, step_deg: float = 0.001, lon0: float = 24.94, lat0: float = 60.17
) -> StreetGraph:
    """An n x n grid, edges both ways, 10 s per edge; node id = row * n + col."""
    u, v = [], []
    for r in range(n):
        for c in range(n):
            i = r * n + c
            if c + 1 < n:
                u += [i, i + 1]
                v += [i + 1, i]
            if r + 1 < n:
                u += [i, i + n]
                v += [i + n, i]
    lon = np.array([lon0 + c * step_deg for r in range(n) for c in range(n)])
    lat = np.array([lat0 + r * step_deg for r in range(n) for c in range(n)])
    return StreetGraph.from_edges("walk", u, v, np.full(len(u), 10.0), lon, lat)


class TestDaysMask:
    def test_bits_follow_weekday_numbers(self) -> None:
        assert gp.days_mask(["mon"]) == 1
        assert gp.days_mask(["sun"]) == 1 << 6
        assert gp.days_mask(gp.DAYS) == gp.ALL_DAYS

    def test_unknown_day_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown weekday"):
            gp.days_mask(["monday"])


class TestWindowActive:
    def test_plain_window_is_half_open(self) -> None:
        mask = gp.days_mask(["mon"])
        act = lambda s: bool(gp.window_active(mask, 9 * H, 17 * H, weekday=MON, second=s))  # noqa: E731
        assert not act(9 * H - 1)
        assert act(9 * H)
        assert act(17 * H - 1)
        assert not act(17 * H)

    def test_plain_window_only_on_its_days(self) -> None:
        mask = gp.days_mask(["mon", "wed"])
        days = [
            bool(gp.window_active(mask, 9 * H, 17 * H, weekday=d, second=12 * H)) for d in range(7)
        ]
        assert days == [True, False, True, False, False, False, False]

    def test_crossing_midnight_belongs_to_start_day(self) -> None:
        # Friday 22:00 - 06:00: Friday night and Saturday early morning, not Friday early morning.
        mask = gp.days_mask(["fri"])
        act = lambda d, s: bool(gp.window_active(mask, 22 * H, 6 * H, weekday=d, second=s))  # noqa: E731
        assert act(FRI, 23 * H)
        assert act(SAT, 3 * H)
        assert not act(SAT, 6 * H)
        assert not act(FRI, 3 * H)
        assert not act(SAT, 23 * H)
        assert not act(FRI, 21 * H)

    def test_sunday_night_wraps_to_monday(self) -> None:
        mask = gp.days_mask(["sun"])
        assert bool(gp.window_active(mask, 23 * H, 1 * H, weekday=MON, second=0.5 * H))
        assert not bool(gp.window_active(mask, 23 * H, 1 * H, weekday=SUN, second=0.5 * H))

    def test_vectorised_over_windows(self) -> None:
        masks = np.array([gp.ALL_DAYS, gp.ALL_DAYS, gp.days_mask(["tue"])])
        out = gp.window_active(
            masks, [8 * H, 20 * H, 8 * H], [9 * H, 2 * H, 9 * H], weekday=MON, second=8.5 * H
        )
        assert out.tolist() == [True, False, False]

    @given(
        st.integers(0, 127),
        st.integers(0, 86_399),
        st.integers(0, 86_399),
        st.integers(0, 6),
        st.integers(0, 86_399),
    )
    def test_matches_a_minute_by_minute_reference(
        self, mask: int, s: int, e: int, d: int, t: int
    ) -> None:
        def reference() -> bool:
            if s == e:
                return False
            today = bool(mask >> d & 1)
            yesterday = bool(mask >> ((d - 1) % 7) & 1)
            if s < e:
                return today and s <= t < e
            return (today and t >= s) or (yesterday and t < e)

        assert bool(gp.window_active(mask, s, e, weekday=d, second=t)) == reference()


class TestBoundaries:
    @given(
        st.lists(
            st.tuples(st.integers(1, 127), st.integers(0, 86_399), st.integers(0, 86_399)),
            min_size=1,
            max_size=5,
        ),
        st.integers(0, gp.WEEK_S - 1),
        st.integers(0, gp.WEEK_S - 1),
    )
    def test_same_segment_means_same_active_set(
        self, windows: list[tuple[int, int, int]], t1: int, t2: int
    ) -> None:
        mask, start, end = (np.array(x) for x in zip(*windows, strict=True))
        bounds = gp.week_boundaries(mask, start, end)

        def seg(t: int) -> int:
            return gp.week_segment(bounds, t // gp.DAY_S, t % gp.DAY_S)

        def act(t: int) -> list[bool]:
            return gp.window_active(
                mask, start, end, weekday=t // gp.DAY_S, second=t % gp.DAY_S
            ).tolist()

        if seg(t1) == seg(t2):
            assert act(t1) == act(t2)

    def test_boundaries_of_a_window_crossing_the_week_end(self) -> None:
        b = gp.week_boundaries([gp.days_mask(["sun"])], [23 * H], [1 * H])
        assert b.tolist() == [1 * H, 6 * gp.DAY_S + 23 * H]


class TestQuietHours:
    def test_overnight_quiet_hours_every_day(self) -> None:
        start = np.array([23 * H, np.nan, 13 * H])
        end = np.array([6.5 * H, np.nan, 14 * H])
        at = lambda d, s: gp.quiet_members(start, end, weekday=d, second=s).tolist()  # noqa: E731
        assert at(WED, 3 * H) == [True, False, False]
        assert at(WED, 23 * H) == [True, False, False]
        assert at(WED, 13.5 * H) == [False, False, True]
        assert at(WED, 7 * H) == [False, False, False]

    def test_quiet_boundaries_skip_members_without_quiet_hours(self) -> None:
        b = gp.quiet_boundaries([np.nan, 23 * H], [np.nan, 6 * H])
        assert b.size == 14


def _table(rows: list[tuple[int, int, int, int, float, float]]) -> gp.AnchorTable:
    """rows: (member, kind, node, mask, start_s, end_s)."""
    m, k, n, mask, s, e = (np.array(x) for x in zip(*rows, strict=True))
    return gp.AnchorTable.build(m, k, n, np.zeros(len(m)), np.zeros(len(m)), mask, s, e)


class TestSelect:
    weekdays = gp.days_mask(["mon", "tue", "wed", "thu", "fri"])

    def table(self) -> gp.AnchorTable:
        return _table(
            [
                # member 0: home 1, work zone 9-17 weekdays (node 2), morning route 8-9 (nodes 3, 4)
                (0, gp.KIND_HOME, 1, gp.ALL_DAYS, 0, 0),
                (0, gp.KIND_ZONE, 2, self.weekdays, 9 * H, 17 * H),
                (0, gp.KIND_ROUTE, 3, self.weekdays, 8 * H, 9 * H),
                (0, gp.KIND_ROUTE, 4, self.weekdays, 8 * H, 9 * H),
                # member 1: home only
                (1, gp.KIND_HOME, 7, gp.ALL_DAYS, 0, 0),
                # member 2: night-shift zone Fri 22-06 and home
                (2, gp.KIND_ZONE, 8, gp.days_mask(["fri"]), 22 * H, 6 * H),
                (2, gp.KIND_HOME, 9, gp.ALL_DAYS, 0, 0),
            ]
        )

    def nodes(
        self, weekday: int, second: float, member_ok: np.ndarray | None = None
    ) -> dict[int, list[int]]:
        t = self.table()
        idx = t.select(weekday=weekday, second=second, member_ok=member_ok)
        out: dict[int, list[int]] = {}
        for m, n in zip(t.member[idx].tolist(), t.node[idx].tolist(), strict=True):
            out.setdefault(m, []).append(n)
        return {m: sorted(v) for m, v in out.items()}

    def test_route_wins_over_zone_and_home(self) -> None:
        assert self.nodes(TUE, 8.5 * H)[0] == [3, 4]

    def test_zone_wins_over_home(self) -> None:
        assert self.nodes(TUE, 10 * H)[0] == [2]

    def test_home_when_nothing_is_active(self) -> None:
        got = self.nodes(SAT, 10 * H)
        assert got == {0: [1], 1: [7], 2: [9]}

    def test_night_shift_after_midnight_counts_for_saturday(self) -> None:
        assert self.nodes(SAT, 2 * H)[2] == [8]
        assert self.nodes(FRI, 2 * H)[2] == [9]

    def test_member_filter_drops_members(self) -> None:
        got = self.nodes(TUE, 8.5 * H, member_ok=np.array([False, True, True]))
        assert set(got) == {1, 2}

    def test_empty_selection(self) -> None:
        assert self.nodes(TUE, 8.5 * H, member_ok=np.zeros(3, dtype=bool)) == {}


class TestZoneNodes:
    def test_node_inside_the_zone_is_preferred(self) -> None:
        g = _grid()
        snapper = Snapper(g)
        box = shapely.box(24.9418, 60.1718, 24.9422, 60.1722)  # around node 12
        off = shapely.box(24.94255, 60.17255, 24.94305, 60.17305)  # holds node 18 (24.943, 60.173)
        empty = shapely.box(24.94405, 60.17405, 24.94495, 60.17495)  # holds no node
        lon, lat, node, dist = gp.zone_nodes([box, off, empty], g, snapper)
        assert node[0] == 12 and dist[0] == 0
        assert node[1] == 18 and dist[1] == 0
        assert dist[2] > 0
        assert shapely.contains_xy(box, lon[0], lat[0])

    def test_inside_node_found_when_nearest_is_outside(self) -> None:
        g = _grid()
        snapper = Snapper(g)
        # A box between grid rows (no node inside) with a small tab reaching node 6: the
        # representative point's nearest node (7) is outside, node 6 is the one inside.
        poly = shapely.union(
            shapely.box(24.9405, 60.17105, 24.9435, 60.17195),
            shapely.box(24.94095, 60.17095, 24.94105, 60.17106),
        )
        rep = shapely.point_on_surface(poly)
        nearest, _ = snapper.snap(rep.x, rep.y)
        assert not shapely.contains_xy(poly, g.lon[nearest[0]], g.lat[nearest[0]])
        _, _, node, dist = gp.zone_nodes([poly], g, snapper)
        assert node[0] == 6
        assert dist[0] == 0


class TestRouteNodes:
    def test_every_node_along_the_route_once(self) -> None:
        g = _grid()
        snapper = Snapper(g)
        line = shapely.LineString([(24.940, 60.170), (24.944, 60.170), (24.944, 60.172)])
        which, lon, lat = gp.route_points([line])
        assert lon.size > 10
        route, node, _, _ = gp.route_nodes(which, lon, lat, snapper, max_snap_m=30)
        assert route.tolist() == [0] * 7
        assert sorted(node.tolist()) == [0, 1, 2, 3, 4, 9, 14]

    def test_far_samples_are_dropped(self) -> None:
        g = _grid()
        snapper = Snapper(g)
        line = shapely.LineString([(24.944, 60.170), (24.950, 60.170)])
        which, lon, lat = gp.route_points([line])
        _, node, _, _ = gp.route_nodes(which, lon, lat, snapper, max_snap_m=30)
        assert node.tolist() == [4]
