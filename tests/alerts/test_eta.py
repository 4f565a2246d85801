"""ETAs end to end through the API checked against NetworkX; straight lines without a graph."""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

import networkx as nx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.alerts.schemas import AlertCoordinatorView
from api.graphs import GraphStore
from tests.alerts.helpers import post_alert
from tests.api.factories import unique_handle

MODES = ("walk", "bike", "drive")


@pytest.fixture(scope="module")
def networks(graphs) -> dict[str, dict[str, Any]]:
    """Per mode: the graph, its NetworkX twin, the nodes of its largest strongly connected part."""
    out = {}
    for mode in MODES:
        graph = graphs.get(mode).graph
        g = graph.to_networkx()
        core = max(nx.strongly_connected_components(g), key=len)
        out[mode] = {"graph": graph, "nx": g, "core": sorted(core)}
    return out


def _shared_targets(networks: dict[str, dict[str, Any]]) -> list[tuple[float, float]]:
    """Points that are a node of every mode's core, so no mode adds a final approach."""
    by_osm = []
    for mode in MODES:
        graph = networks[mode]["graph"]
        core = np.asarray(networks[mode]["core"])
        by_osm.append({int(graph.osm_id[n]): n for n in core})
    shared = sorted(set(by_osm[0]) & set(by_osm[1]) & set(by_osm[2]))
    walk = networks["walk"]["graph"]
    return [(float(walk.lon[by_osm[0][o]]), float(walk.lat[by_osm[0][o]])) for o in shared]


@pytest.mark.slow
class TestEtaAgainstNetworkX:
    def test_generated_alerts_rank_in_networkx_order_with_exact_etas(
        self, api, networks, make_member, coordinator, settings
    ):
        rng = random.Random(20261123)
        members: list[tuple[uuid.UUID, str, int]] = []
        for mode, count in (("walk", 8), ("bike", 4), ("drive", 4)):
            graph = networks[mode]["graph"]
            for node in rng.sample(networks[mode]["core"], count):
                member, _ = make_member(
                    roles=("responder",),
                    handle=unique_handle(mode),
                    mode=mode,
                    lon=float(graph.lon[node]),
                    lat=float(graph.lat[node]),
                    side_m=220.0,
                )
                members.append((member.id, mode, node))
        _, token = coordinator
        targets = _shared_targets(networks)
        assert len(targets) >= 3
        for lon, lat in rng.sample(targets, 3):
            body = {
                "location": {"type": "Point", "coordinates": [lon, lat]},
                "kind": "personal",
                "needed": 5,
            }
            res = post_alert(api, token, body, key=str(uuid.uuid4()))
            assert res.status_code == 201, res.text
            view = AlertCoordinatorView.model_validate(res.json())
            assert view.ranking == "street_network"
            expected = {}
            for member_id, mode, node in members:
                net = networks[mode]
                target = _node_at(net["graph"], lon, lat)
                try:
                    t = nx.shortest_path_length(net["nx"], node, target, weight="travel_time_s")
                except nx.NetworkXNoPath:
                    continue
                eta = settings.mobilization_s + t
                if eta <= settings.mass_max_eta_s:
                    expected[member_id] = eta
            got = {r.member_id: r.eta_s for r in view.responders}
            assert set(got) == set(expected)
            for member_id, eta in expected.items():
                assert got[member_id] == pytest.approx(eta, abs=1e-3), member_id
            etas = [r.eta_s for r in view.responders]
            assert etas == sorted(etas)


def _node_at(graph: Any, lon: float, lat: float) -> int:
    hits = np.flatnonzero((graph.lon == lon) & (graph.lat == lat))
    assert hits.size >= 1
    return int(hits[0])


def _haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


class TestStraightLine:
    def test_without_the_walk_graph_the_alert_says_straight_line(
        self, settings, graphs, engine, session_factory, clock, site, place, coordinator
    ):
        from api.main import create_app

        degraded = GraphStore(
            by_mode={m: g for m, g in graphs.by_mode.items() if m != "walk"},
            problems={"walk": "unavailable: left out by the test"},
        )
        app = create_app(
            settings, engine=engine, session_factory=session_factory, graphs=degraded, clock=clock
        )
        client = TestClient(app, raise_server_exceptions=False)
        nodes = site.nodes_by_time()
        near, _ = place(site, nodes[10])
        far, _ = place(site, nodes[200])
        _, token = coordinator
        body = {"location": site.point(), "kind": "personal", "needed": 1}
        res = post_alert(client, token, body)
        assert res.status_code == 201, res.text
        view = AlertCoordinatorView.model_validate(res.json())
        assert view.ranking == "straight_line"
        by_id = {r.member_id: r.eta_s for r in view.responders}
        for member, node in ((near, nodes[10]), (far, nodes[200])):
            d = _haversine_m(
                float(site.graph.lon[node]), float(site.graph.lat[node]), site.lon, site.lat
            )
            assert by_id[member.id] == pytest.approx(
                settings.mobilization_s + d / settings.walk_speed_mps, abs=0.5
            )
