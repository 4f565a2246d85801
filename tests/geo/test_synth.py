"""Synthetic members on real street graphs: reproducible, valid zones, routes on shortest paths."""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from typing import Any

import networkx as nx
import numpy as np
import pytest
import shapely

from geo.crs import to_metric
from geo.graph import StreetGraph
from geo.synth import (
    MAX_ZONE_AREA_M2,
    WEEKDAYS,
    members_from_geojson,
    members_to_geojson,
    synth_members,
)

MEMBER_KEYS = {"handle", "roles", "mode", "home_zone", "zones", "routes", "available", "contact"}


@pytest.fixture(scope="module")
def walk_members(monaco: dict[str, StreetGraph]) -> list[dict[str, Any]]:
    return synth_members(monaco["walk"], 120, seed=11)


@pytest.fixture(scope="module")
def mixed_members(monaco: dict[str, StreetGraph]) -> list[dict[str, Any]]:
    return synth_members(monaco, 160, seed=5, mode_shares={"walk": 0.5, "drive": 0.5})


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _node_of(graph: StreetGraph) -> dict[tuple[float, float], int]:
    return {
        (float(x), float(y)): i for i, (x, y) in enumerate(zip(graph.lon, graph.lat, strict=True))
    }


class TestReproducibility:
    def test_same_seed_gives_identical_members(self, monaco: dict[str, StreetGraph]) -> None:
        a = synth_members(monaco, 40, seed=3)
        b = synth_members(monaco, 40, seed=3)
        assert json.dumps(a) == json.dumps(b)

    def test_other_seed_gives_other_members(self, monaco: dict[str, StreetGraph]) -> None:
        a = synth_members(monaco, 40, seed=3)
        b = synth_members(monaco, 40, seed=4)
        assert [m["home_zone"] for m in a] != [m["home_zone"] for m in b]


class TestBodyShape:
    def test_every_body_has_the_members_api_fields(
        self, mixed_members: list[dict[str, Any]]
    ) -> None:
        for m in mixed_members:
            assert MEMBER_KEYS <= set(m) <= MEMBER_KEYS | {"quiet_hours"}
            assert m["mode"] in ("walk", "drive")
            assert set(m["roles"]) <= {"responder", "defense"}
            assert isinstance(m["available"], bool)
            assert m["home_zone"]["type"] == "Polygon"
            for r in m["routes"]:
                assert r["path"]["type"] == "LineString"
            if "quiet_hours" in m:
                assert set(m["quiet_hours"]) == {"start", "end"}

    def test_handles_and_contacts_are_unique_and_local(
        self, mixed_members: list[dict[str, Any]]
    ) -> None:
        handles = [m["handle"] for m in mixed_members]
        assert len(set(handles)) == len(handles)
        phones = [m["contact"]["phone"] for m in mixed_members]
        assert len(set(phones)) == len(phones)
        for m in mixed_members:
            c = m["contact"]
            assert c["email"] == f"{m['handle']}@example.org"
            assert c["phone"].startswith("+49") and c["phone"][1:].isdigit()
            assert c["webhook_url"].startswith("http://127.0.0.1:")

    def test_body_matches_the_example_member(self, walk_members: list[dict[str, Any]]) -> None:
        from tests.paths import REPO

        example = json.loads((REPO / ".." / "shared" / "examples" / "member.json").read_text())
        body = next(m for m in walk_members if m["routes"] and "quiet_hours" in m)
        assert set(body) == set(example)
        assert set(body["zones"][0]) == set(example["zones"][0])
        assert set(body["routes"][0]) == set(example["routes"][0])
        assert set(body["contact"]) == set(example["contact"])

    def test_geojson_round_trip_gives_the_bodies_back(
        self, mixed_members: list[dict[str, Any]]
    ) -> None:
        fc = json.loads(json.dumps(members_to_geojson(mixed_members)))
        assert fc["type"] == "FeatureCollection"
        assert all(f["geometry"]["type"] == "Polygon" for f in fc["features"])
        assert members_from_geojson(fc) == mixed_members
        assert members_from_geojson(mixed_members) == mixed_members


class TestZones:
    def test_zones_are_valid_large_enough_and_simple(
        self, mixed_members: list[dict[str, Any]]
    ) -> None:
        zones = [m["home_zone"] for m in mixed_members]
        zones += [z["area"] for m in mixed_members for z in m["zones"]]
        for z in zones:
            poly = shapely.geometry.shape(z)
            assert poly.is_valid
            assert len(z["coordinates"][0]) <= 2000
            area = to_metric(poly).area
            assert 40_000 <= area < MAX_ZONE_AREA_M2

    def test_zones_hold_their_node_off_centre(self, mixed_members: list[dict[str, Any]]) -> None:
        for m in (m for m in mixed_members if m["routes"]):
            out = m["routes"][0]["path"]["coordinates"]
            home = shapely.geometry.shape(m["home_zone"])
            work = shapely.geometry.shape(m["zones"][0]["area"])
            home_node, work_node = shapely.Point(out[0]), shapely.Point(out[-1])
            assert home.contains(home_node)
            assert work.contains(work_node)
            centre_gap_m = to_metric(shapely.LineString([home.centroid, home_node])).length
            assert centre_gap_m > 5.0

    def test_min_area_is_configurable(self, monaco: dict[str, StreetGraph]) -> None:
        ms = synth_members(monaco["walk"], 10, seed=1, min_zone_area_m2=100_000.0)
        areas = [to_metric(shapely.geometry.shape(m["home_zone"])).area for m in ms]
        assert min(areas) >= 100_000.0


class TestRoutes:
    def _check_paths(self, graph: StreetGraph, members: list[dict[str, Any]]) -> int:
        g = graph.to_networkx()
        node = _node_of(graph)
        checked = 0
        for m in members:
            if not m["routes"]:
                continue
            out, back = (r["path"]["coordinates"] for r in m["routes"])
            path_out = [node[(x, y)] for x, y in out]
            path_back = [node[(x, y)] for x, y in back]
            home, work = path_out[0], path_out[-1]
            assert (path_back[0], path_back[-1]) == (work, home)
            for path, (a, b) in ((path_out, (home, work)), (path_back, (work, home))):
                assert all(g.has_edge(u, v) for u, v in pairwise(path))
                time_s = sum(g[u][v]["travel_time_s"] for u, v in pairwise(path))
                expected = nx.shortest_path_length(g, a, b, weight="travel_time_s")
                assert time_s == pytest.approx(expected, abs=1e-3)
            checked += 1
        return checked

    def test_walk_routes_are_shortest_paths_along_edges(
        self, monaco: dict[str, StreetGraph], walk_members: list[dict[str, Any]]
    ) -> None:
        assert self._check_paths(monaco["walk"], walk_members) >= 90

    def test_drive_routes_respect_one_way_streets(
        self, monaco: dict[str, StreetGraph], mixed_members: list[dict[str, Any]]
    ) -> None:
        drive = [m for m in mixed_members if m["mode"] == "drive"]
        assert self._check_paths(monaco["drive"], drive) >= 50
        # one-way streets make some return trips differ from the reversed outbound trip
        assert any(
            m["routes"][1]["path"]["coordinates"] != m["routes"][0]["path"]["coordinates"][::-1]
            for m in drive
            if m["routes"]
        )

    def test_vertex_cap_thins_long_routes(self, monaco: dict[str, StreetGraph]) -> None:
        capped = synth_members(monaco["walk"], 30, seed=2, max_route_vertices=4)
        full = synth_members(monaco["walk"], 30, seed=2)
        for c, f in zip(capped, full, strict=True):
            for rc, rf in zip(c["routes"], f["routes"], strict=True):
                coords, ref = rc["path"]["coordinates"], rf["path"]["coordinates"]
                assert 2 <= len(coords) <= 4
                assert (coords[0], coords[-1]) == (ref[0], ref[-1])

    def test_commute_times_stay_in_the_configured_band(
        self, monaco: dict[str, StreetGraph]
    ) -> None:
        graph = monaco["walk"]
        g = graph.to_networkx()
        node = _node_of(graph)
        ms = synth_members(graph, 40, seed=8, commute_s={"walk": (300.0, 600.0)})
        times = []
        for m in (m for m in ms if m["routes"]):
            path = [node[(x, y)] for x, y in m["routes"][0]["path"]["coordinates"]]
            times.append(sum(g[u][v]["travel_time_s"] for u, v in pairwise(path)))
        assert times
        assert max(times) <= 600.0 + 1e-6
        assert np.median(times) >= 300.0


class TestSharesAndSchedules:
    def test_role_shares_are_as_configured(self, monaco: dict[str, StreetGraph]) -> None:
        ms = synth_members(monaco["walk"], 400, seed=1, responder_share=0.3, defense_share=0.25)
        roles = Counter(r for m in ms for r in m["roles"])
        assert roles["responder"] == 120
        assert roles["defense"] == 100

    def test_default_shares(self, walk_members: list[dict[str, Any]]) -> None:
        n = len(walk_members)
        roles = Counter(r for m in walk_members for r in m["roles"])
        assert roles["responder"] == round(0.6 * n)
        assert roles["defense"] == round(0.1 * n)
        assert sum(m["available"] for m in walk_members) == round(0.85 * n)
        assert sum("quiet_hours" in m for m in walk_members) == round(0.3 * n)
        assert sum(bool(m["routes"]) for m in walk_members) == round(0.85 * n)

    def test_mode_mix_follows_the_shares_of_the_graphs_given(
        self, monaco: dict[str, StreetGraph]
    ) -> None:
        ms = synth_members(monaco, 200, seed=1)  # default 50/20/30 walk/bike/drive, no bike graph
        modes = Counter(m["mode"] for m in ms)
        assert modes == {"walk": 125, "drive": 75}

    def test_schedules_fall_in_commute_windows(self, mixed_members: list[dict[str, Any]]) -> None:
        commuters = [m for m in mixed_members if m["routes"]]
        assert commuters
        for m in commuters:
            out, back = m["routes"]
            zone = m["zones"][0]
            assert 7 * 60 <= _minutes(out["start"]) < _minutes(out["end"]) <= 9 * 60 + 30
            assert 16 * 60 <= _minutes(back["start"]) < _minutes(back["end"]) <= 19 * 60
            assert zone["start"] == out["end"] and zone["end"] == back["start"]
            assert zone["name"] == "work"
            for item in (out, back, zone):
                assert item["days"] == list(WEEKDAYS)
        for m in mixed_members:
            if "quiet_hours" in m:
                q = m["quiet_hours"]
                assert 22 * 60 <= _minutes(q["start"]) <= 23 * 60 + 30
                assert 5 * 60 + 30 <= _minutes(q["end"]) <= 7 * 60


class TestErrors:
    def test_share_outside_unit_interval_is_refused(self, monaco: dict[str, StreetGraph]) -> None:
        with pytest.raises(ValueError, match="responder_share"):
            synth_members(monaco["walk"], 5, seed=1, responder_share=1.5)

    def test_mode_shares_without_a_matching_graph_are_refused(
        self, monaco: dict[str, StreetGraph]
    ) -> None:
        with pytest.raises(ValueError, match="no mode share"):
            synth_members(monaco, 5, seed=1, mode_shares={"bike": 1.0})

    def test_zero_members(self, monaco: dict[str, StreetGraph]) -> None:
        assert synth_members(monaco, 0, seed=1) == []
