"""rank_members on the real Helsinki graphs and PostGIS, checked against NetworkX."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time

import networkx as nx
import numpy as np
import pytest
import shapely
from geoalchemy2.shape import from_shape
from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.members.models import Member
from api.presence import repository as repo
from api.presence.area import check_in_service_area
from api.presence.cache import presence_index
from api.presence.candidates import Ranking
from api.presence.ranking import rank_members
from api.settings import Settings
from geo.errors import OutsideServiceArea
from geo.presence import route_points
from geo.rank import haversine_m
from tests.presence.conftest import AddMember, node_box

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
# Tuesday 24 Nov 2026, 08:30 in Helsinki (UTC+2).
TUE_0830 = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)
# Saturday 28 Nov 2026, 12:00 in Helsinki.
SAT_NOON = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def _rank(db: Session, graphs: GraphStore, settings: Settings, node: int, **kw) -> Ranking:  # type: ignore[no-untyped-def]
    g = graphs.get("walk").graph
    args = {
        "at": TUE_0830,
        "roles": None,
        "exclude": frozenset(),
        "limit": None,
        "max_eta_s": 1e6,
    }
    args.update(kw)
    return rank_members(
        db, graphs, settings, lon=float(g.lon[node]), lat=float(g.lat[node]), **args
    )


def _ids(ranking: Ranking) -> list[uuid.UUID]:
    return [c.member_id for c in ranking.candidates]


def _path_line(graph, nodes: list[int]) -> shapely.LineString:  # type: ignore[no-untyped-def]
    return shapely.LineString([(graph.lon[n], graph.lat[n]) for n in nodes])


class TestAgainstNetworkX:
    """Random members on the walk, bike and drive graphs; ETAs and order equal NetworkX's."""

    def test_generated_alerts(
        self,
        db: Session,
        graphs: GraphStore,
        settings: Settings,
        add_member: AddMember,
        reversed_nx: dict[str, nx.DiGraph],
    ) -> None:
        rng = np.random.default_rng(7)
        walk = graphs.get("walk")
        expected_anchors: dict[uuid.UUID, tuple[str, list[int], float]] = {}
        for i in range(36):
            mode = ("walk", "walk", "bike", "drive")[i % 4]
            mg = graphs.get(mode)
            g = mg.graph
            home = int(rng.integers(g.n_nodes))
            speed = 1.0 if (mode == "walk" and i % 8 == 0) else None
            kind = i % 3
            if kind == 0:  # home only
                m = add_member(node_box(g, home), mode=mode, speed_mps=speed)
                expected_anchors[m.id] = (mode, [home], speed or 0)
            elif kind == 1:  # a work zone active on weekdays 08:00-12:00
                work = int(rng.integers(g.n_nodes))
                m = add_member(
                    node_box(g, home),
                    mode=mode,
                    speed_mps=speed,
                    zones=[(node_box(g, work), WEEKDAYS, time(8), time(12))],
                )
                expected_anchors[m.id] = (mode, [work], speed or 0)
            else:  # a commute route along a shortest path, active 08:15-08:50
                dest = int(rng.integers(g.n_nodes))
                path = nx.shortest_path(reversed_nx[mode], dest, home, weight="travel_time_s")[::-1]
                path = path[:40]
                line = _path_line(g, path) if len(path) > 1 else None
                if line is None:
                    m = add_member(node_box(g, home), mode=mode)
                    expected_anchors[m.id] = (mode, [home], 0)
                    continue
                m = add_member(
                    node_box(g, home),
                    mode=mode,
                    speed_mps=speed,
                    routes=[(line, WEEKDAYS, time(8, 15), time(8, 50))],
                )
                _, lon, lat = route_points([line])
                nodes, dist = mg.snapper.snap(lon, lat)
                route_nodes = sorted(set(nodes[dist <= settings.max_snap_m].tolist()) | set(path))
                expected_anchors[m.id] = (mode, route_nodes, speed or 0)
        for target in rng.integers(walk.graph.n_nodes, size=8).tolist():
            lon, lat = float(walk.graph.lon[target]), float(walk.graph.lat[target])
            ranking = _rank(db, graphs, settings, target)
            assert ranking.method == "street_network"
            expected: dict[uuid.UUID, float] = {}
            for member_id, (mode, nodes, speed) in expected_anchors.items():
                mg = graphs.get(mode)
                t_node, t_dist = mg.snapper.snap(lon, lat)
                dist = nx.single_source_dijkstra_path_length(
                    reversed_nx[mode], int(t_node[0]), weight="travel_time_s"
                )
                reach = [dist[n] for n in nodes if n in dist]
                if not reach:
                    continue
                factor = settings.walk_speed_mps / speed if speed else 1.0
                expected[member_id] = (
                    settings.mobilization_s
                    + float(t_dist[0]) / settings.walk_speed_mps
                    + factor * min(reach)
                )
            got = {c.member_id: c.eta_s for c in ranking.candidates}
            assert len(expected) >= 30
            assert set(got) == set(expected)
            for member_id, eta in got.items():
                assert eta == pytest.approx(expected[member_id], abs=1e-2)
            etas = [c.eta_s for c in ranking.candidates]
            assert etas == sorted(etas)
            top = _rank(db, graphs, settings, target, limit=5)
            assert [c.eta_s for c in top.candidates] == pytest.approx(
                sorted(expected.values())[:5], abs=1e-2
            )


class TestPresenceRules:
    """Which anchor places a member at a time, and who is left out."""

    @pytest.fixture
    def g(self, graphs: GraphStore):  # type: ignore[no-untyped-def]
        return graphs.get("walk").graph

    def _near_far(self, g, reversed_nx) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
        """A target node, a node about 2 minutes from it and one about 15 minutes away."""
        target = int(np.argmin(np.abs(g.lon - 24.9384) + np.abs(g.lat - 60.1699)))
        dist = nx.single_source_dijkstra_path_length(
            reversed_nx["walk"], target, weight="travel_time_s"
        )
        near = min(dist, key=lambda n: abs(dist[n] - 120))
        far = min(dist, key=lambda n: abs(dist[n] - 900))
        return target, near, far

    def test_zone_active_only_in_its_window(
        self, db, graphs, settings, add_member, g, reversed_nx
    ) -> None:  # type: ignore[no-untyped-def]
        target, near, far = self._near_far(g, reversed_nx)
        m = add_member(node_box(g, far), zones=[(node_box(g, near), WEEKDAYS, time(8), time(9))])
        at_work = _rank(db, graphs, settings, target, at=TUE_0830).candidates[0].eta_s
        weekend = _rank(db, graphs, settings, target, at=SAT_NOON).candidates[0].eta_s
        assert at_work < weekend
        assert _ids(_rank(db, graphs, settings, target)) == [m.id]

    def test_route_beats_zone_beats_home(
        self, db, graphs, settings, add_member, g, reversed_nx
    ) -> None:  # type: ignore[no-untyped-def]
        target, near, far = self._near_far(g, reversed_nx)
        path = nx.shortest_path(reversed_nx["walk"], far, near, weight="travel_time_s")[::-1]
        # route passes near the target but the zone is far: on the route's window the route wins
        add_member(
            node_box(g, far),
            zones=[(node_box(g, far), WEEKDAYS, time(8), time(12))],
            routes=[(_path_line(g, path), WEEKDAYS, time(8, 15), time(8, 50))],
        )
        on_route = _rank(db, graphs, settings, target, at=TUE_0830).candidates[0].eta_s
        in_zone = (
            _rank(db, graphs, settings, target, at=TUE_0830.replace(hour=8)).candidates[0].eta_s
        )
        assert on_route < in_zone - 300

    def test_zone_wins_over_a_nearer_home(
        self, db, graphs, settings, add_member, g, reversed_nx
    ) -> None:  # type: ignore[no-untyped-def]
        target, near, far = self._near_far(g, reversed_nx)
        add_member(node_box(g, near), zones=[(node_box(g, far), WEEKDAYS, time(8), time(12))])
        weekday = _rank(db, graphs, settings, target).candidates[0].eta_s
        weekend = _rank(db, graphs, settings, target, at=SAT_NOON).candidates[0].eta_s
        assert weekday > weekend + 300

    def test_night_shift_crossing_midnight_counts_the_next_morning(
        self, db, graphs, settings, add_member, g, reversed_nx
    ) -> None:  # type: ignore[no-untyped-def]
        target, near, far = self._near_far(g, reversed_nx)
        add_member(node_box(g, far), zones=[(node_box(g, near), ["fri"], time(22), time(6))])
        sat_0300 = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)  # Saturday 03:00 Helsinki
        fri_0300 = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)  # Friday 03:00 Helsinki
        assert (
            _rank(db, graphs, settings, target, at=sat_0300).candidates[0].eta_s
            < _rank(db, graphs, settings, target, at=fri_0300).candidates[0].eta_s - 300
        )

    def test_quiet_hours_unavailable_excluded_and_roles_filter(
        self, db, graphs, settings, add_member, g, reversed_nx
    ) -> None:  # type: ignore[no-untyped-def]
        target, near, _ = self._near_far(g, reversed_nx)
        box = node_box(g, near)
        quiet = add_member(box, quiet=(time(8), time(9)))
        overnight = add_member(box, quiet=(time(23), time(9)))
        add_member(box, available=False)
        excluded = add_member(box)
        defense = add_member(box, roles=("defense",))
        plain = add_member(box)
        ranked = set(_ids(_rank(db, graphs, settings, target, exclude=frozenset({excluded.id}))))
        assert ranked == {defense.id, plain.id}
        later = set(_ids(_rank(db, graphs, settings, target, at=TUE_0830.replace(hour=9))))
        assert {quiet.id, overnight.id} <= later
        only_defense = _rank(db, graphs, settings, target, roles=frozenset({"defense"}))
        assert _ids(only_defense) == [defense.id]

    def test_limit_and_max_eta(self, db, graphs, settings, add_member, g, reversed_nx) -> None:  # type: ignore[no-untyped-def]
        target, near, far = self._near_far(g, reversed_nx)
        close = add_member(node_box(g, near))
        add_member(node_box(g, far))
        assert _ids(_rank(db, graphs, settings, target, limit=1)) == [close.id]
        bound = settings.mobilization_s + 400
        assert _ids(_rank(db, graphs, settings, target, max_eta_s=bound)) == [close.id]


class TestCache:
    def test_member_change_gives_new_presence(self, db, graphs, settings, add_member) -> None:  # type: ignore[no-untyped-def]
        g = graphs.get("walk").graph
        target = 0
        dist = nx.single_source_dijkstra_path_length(
            graphs.get("walk").graph.to_networkx().reverse(copy=False),
            target,
            weight="travel_time_s",
        )
        near = min(dist, key=lambda n: abs(dist[n] - 60))
        far = min(dist, key=lambda n: abs(dist[n] - 1200))
        m = add_member(node_box(g, far))
        first = _rank(db, graphs, settings, target).candidates[0].eta_s
        index = presence_index(db, graphs, settings)
        assert presence_index(db, graphs, settings) is index
        member = db.get(Member, m.id)
        assert member is not None
        member.home_zone = from_shape(node_box(g, near), srid=4326)
        db.flush()
        assert presence_index(db, graphs, settings) is not index
        second = _rank(db, graphs, settings, target).candidates[0].eta_s
        assert second < first - 600

    def test_warm_presence_builds_the_index_ahead(
        self, session_factory, db, graphs, settings
    ) -> None:  # type: ignore[no-untyped-def]
        from api.presence.cache import warm_presence

        warmed = warm_presence(session_factory, graphs, settings)
        assert presence_index(db, graphs, settings) is warmed

    def test_token_changes_on_zone_and_route_writes(self, db, add_member) -> None:  # type: ignore[no-untyped-def]
        m = add_member(shapely.box(24.93, 60.16, 24.94, 60.17))
        before = repo.presence_token(db)
        member = db.get(Member, m.id)
        assert member is not None
        member.zones = []
        db.flush()
        db.delete(member)
        db.flush()
        assert repo.presence_token(db) != before


class TestStraightLine:
    def test_missing_graph_ranks_by_distance(self, db, graphs, settings, add_member) -> None:  # type: ignore[no-untyped-def]
        g = graphs.get("walk").graph
        store = GraphStore(
            by_mode={m: mg for m, mg in graphs.by_mode.items() if m != "walk"},
            problems={"walk": "unavailable: removed for this test"},
        )
        lon0, lat0 = 24.9384, 60.1699
        homes = [(lon0 + d, lat0) for d in (0.02, 0.005, 0.01)]
        members = [
            add_member(shapely.box(x - 1e-4, y - 1e-4, x + 1e-4, y + 1e-4)) for x, y in homes
        ]
        ranking = rank_members(
            db,
            store,
            settings,
            lon=lon0,
            lat=lat0,
            at=TUE_0830,
            roles=None,
            exclude=frozenset(),
            limit=None,
            max_eta_s=1e6,
        )
        assert ranking.method == "straight_line"
        assert _ids(ranking) == [members[1].id, members[2].id, members[0].id]
        expected = (
            settings.mobilization_s
            + float(haversine_m(homes[1][0], lat0, lon0, lat0)) / settings.walk_speed_mps
        )
        assert ranking.candidates[0].eta_s == pytest.approx(expected, rel=1e-3)
        assert g.n_nodes > 0

    def test_all_graphs_present_is_street_network(self, db, graphs, settings, add_member) -> None:  # type: ignore[no-untyped-def]
        add_member(shapely.box(24.938, 60.169, 24.939, 60.170))
        ranking = rank_members(
            db,
            graphs,
            settings,
            lon=24.9384,
            lat=60.1699,
            at=TUE_0830,
            roles=None,
            exclude=frozenset(),
            limit=None,
            max_eta_s=1e6,
        )
        assert ranking.method == "street_network"
        assert len(ranking.candidates) == 1


class TestServiceArea:
    def test_far_point_is_outside(self, graphs, settings) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(OutsideServiceArea, match="m from the walk street network"):
            check_in_service_area(graphs, settings, lon=25.5, lat=60.5)

    def test_point_in_town_is_inside(self, graphs, settings) -> None:  # type: ignore[no-untyped-def]
        check_in_service_area(graphs, settings, lon=24.9384, lat=60.1699)

    def test_no_graph_accepts(self, settings) -> None:  # type: ignore[no-untyped-def]
        check_in_service_area(GraphStore(), settings, lon=25.5, lat=60.5)
