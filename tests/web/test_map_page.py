"""The map page's files and its street base layer, over the ASGI app (Helsinki graphs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.web.router import STATIC, WEB_DIR
from geo.streets import street_lines
from tests.api.conftest import MakeMember
from tests.api.factories import auth


class TestMapPage:
    def test_page_and_its_files_are_served_without_a_token(self, client: TestClient) -> None:
        page = client.get("/map")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for src in ("/map/static/map.js", "/map/static/map.css"):
            assert src in page.text
        for name, kind in [
            ("map.js", "text/javascript"),
            ("map.css", "text/css"),
            ("vendor/leaflet/leaflet.js", "text/javascript"),
            ("vendor/leaflet/leaflet.css", "text/css"),
        ]:
            r = client.get(f"/map/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name

    def test_nothing_is_loaded_from_another_host(self) -> None:
        for name in ("map.html", "map.js", "map.css"):
            text = (WEB_DIR / name).read_text()
            assert "http://" not in text and "https://" not in text, name

    @pytest.mark.parametrize(
        "name", ["../router.py", "router.py", "vendor/leaflet/LICENSE", "%2e%2e/router.py"]
    )
    def test_only_the_page_files_are_served(self, client: TestClient, name: str) -> None:
        assert client.get(f"/map/static/{name}").status_code == 404
        assert all(p.suffix in {".js", ".css", ".png"} for p in STATIC.values())

    def test_leaflet_licence_ships_beside_it(self) -> None:
        assert "BSD 2-Clause" in (WEB_DIR / "vendor" / "leaflet" / "LICENSE").read_text()


class TestStreets:
    def test_coordinator_gets_lines_of_the_graph_with_attribution(
        self, client: TestClient, make_member: MakeMember, graphs: Any
    ) -> None:
        _, token = make_member(roles=("coordinator",))
        r = client.get("/v1/coverage/streets", params={"mode": "drive"}, headers=auth(token))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/geo+json")
        body = r.json()
        assert body["type"] == "FeatureCollection"
        assert body["ern"]["attribution"] == "© OpenStreetMap contributors"
        (feature,) = body["features"]
        lines = feature["geometry"]["coordinates"]
        assert feature["geometry"]["type"] == "MultiLineString" and len(lines) > 10
        graph = graphs.get("drive").graph
        west, south, east, north = graph.bbox
        pts = np.array([p for line in lines for p in line])
        assert (pts[:, 0] >= west - 1e-5).all() and (pts[:, 0] <= east + 1e-5).all()
        assert (pts[:, 1] >= south - 1e-5).all() and (pts[:, 1] <= north + 1e-5).all()

    def test_all_draws_the_densest_graph(
        self, client: TestClient, make_member: MakeMember, graphs: Any
    ) -> None:
        _, token = make_member(roles=("coordinator",))
        body = client.get("/v1/coverage/streets", headers=auth(token)).json()
        densest = max(graphs.by_mode, key=lambda m: graphs.by_mode[m].graph.n_edges)
        assert body["ern"]["graph"] == densest

    def test_unknown_mode_is_422(self, client: TestClient, make_member: MakeMember) -> None:
        _, token = make_member(roles=("coordinator",))
        r = client.get("/v1/coverage/streets", params={"mode": "boat"}, headers=auth(token))
        assert r.status_code == 422 and "mode" in r.text

    def test_a_mode_without_a_graph_is_409(
        self, settings: Any, graphs: Any, engine: Any, session_factory: Any, make_member: MakeMember
    ) -> None:
        from api.graphs import GraphStore
        from api.main import create_app

        walk_only = GraphStore(by_mode={"walk": graphs.by_mode["walk"]}, problems={})
        app = create_app(settings, engine=engine, session_factory=session_factory, graphs=walk_only)
        _, token = make_member(roles=("coordinator",))
        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.get("/v1/coverage/streets", params={"mode": "drive"}, headers=auth(token))
            assert r.status_code == 409 and "drive" in r.json()["detail"], r.text
            ok = client.get("/v1/coverage/streets", headers=auth(token))
            assert ok.status_code == 200 and ok.json()["ern"]["graph"] == "walk"

    def test_an_unknown_parameter_is_422(self, client: TestClient, make_member: MakeMember) -> None:
        _, token = make_member(roles=("coordinator",))
        r = client.get("/v1/coverage/streets", params={"zoom": "3"}, headers=auth(token))
        assert r.status_code == 422 and "zoom" in r.json()["detail"], r.text

    def test_a_member_is_refused(self, client: TestClient, make_member: MakeMember) -> None:
        _, token = make_member(roles=("responder",))
        assert client.get("/v1/coverage/streets", headers=auth(token)).status_code == 403


def test_lines_cover_every_street_node_of_a_real_graph(graphs: Any) -> None:
    """Simplification may drop bends but never a street: every edge's ends stay near a line."""
    graph = graphs.get("walk").graph
    lines = street_lines(graph)
    ends = {tuple(p) for line in lines for p in (line[0], line[-1])}
    degree = np.diff(graph.indptr) + np.diff(graph.rev_indptr)
    # Dead ends and junctions (degree != 2 each way) are line ends after merging.
    junctions = np.flatnonzero((degree != 4) & (degree > 0))
    found = sum((round(graph.lon[i], 5), round(graph.lat[i], 5)) in ends for i in junctions)
    assert found / len(junctions) > 0.95
    assert street_lines(graph) is lines  # cached on the graph
