"""Snapping points to graph nodes, checked against brute force and geodesic distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo.crs import lonlat_to_xy
from geo.errors import InvalidGeometry, OutsideServiceArea
from geo.graph import StreetGraph
from geo.snap import Snapper


def _haversine_m(
    lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_009.0 * np.arcsin(np.sqrt(h))


def _random_points(
    graph: StreetGraph, n: int, seed: int, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w, s, e, nn = graph.bbox
    return rng.uniform(w - margin, e + margin, n), rng.uniform(s - margin, nn + margin, n)


@pytest.mark.parametrize("mode", ["walk", "drive"])
def test_matches_brute_force(helsinki: dict[str, StreetGraph], mode: str) -> None:
    graph = helsinki[mode]
    snapper = Snapper(graph)
    lon, lat = _random_points(graph, 2000, seed=1, margin=0.002)
    nodes, dist = snapper.snap(lon, lat)
    assert nodes.dtype == np.int32 and dist.dtype == np.float64 and nodes.shape == (2000,)
    px, py = lonlat_to_xy(lon, lat, snapper.crs)
    nx_, ny_ = lonlat_to_xy(graph.lon, graph.lat, snapper.crs)
    d2 = (px[:, None] - nx_[None, :]) ** 2 + (py[:, None] - ny_[None, :]) ** 2
    brute = np.sqrt(d2.min(axis=1))
    np.testing.assert_allclose(dist, brute, rtol=1e-9, atol=1e-6)
    unique = np.sort(d2, axis=1)[:, 1] > d2.min(axis=1) + 1e-6
    assert np.array_equal(nodes[unique], d2.argmin(axis=1)[unique])
    # the metric CRS keeps distances within 0.5 % of the geodesic ones
    geodesic = _haversine_m(lon, lat, graph.lon[nodes], graph.lat[nodes])
    far = geodesic > 5
    np.testing.assert_allclose(dist[far], geodesic[far], rtol=5e-3)


def test_points_on_nodes_snap_to_themselves(monaco: dict[str, StreetGraph]) -> None:
    graph = monaco["drive"]
    pick = np.random.default_rng(2).choice(graph.n_nodes, 300, replace=False)
    nodes, dist = Snapper(graph).snap(graph.lon[pick], graph.lat[pick], max_snap_m=0.01)
    assert np.array_equal(nodes, pick) and dist.max() < 1e-6


def test_beyond_max_snap_is_outside_service_area(helsinki: dict[str, StreetGraph]) -> None:
    graph = helsinki["walk"]
    snapper = Snapper(graph)
    _, _, e, n = graph.bbox
    inside_lon, inside_lat = graph.lon[0] + 0.0001, graph.lat[0]
    far_lon, far_lat = e + 0.1, n  # about 5.5 km east of the extract
    _, dist = snapper.snap([inside_lon], [inside_lat], max_snap_m=300.0)
    assert dist[0] < 300
    with pytest.raises(OutsideServiceArea, match=r"1 point\(s\) farther than 300 m"):
        snapper.snap([inside_lon, far_lon], [inside_lat, far_lat], max_snap_m=300.0)
    _, dist = snapper.snap([far_lon], [far_lat])  # no limit: a distance, no error
    assert 4000 < dist[0] < 8000


def test_scalar_and_empty_inputs(helsinki: dict[str, StreetGraph]) -> None:
    snapper = Snapper(helsinki["drive"])
    nodes, dist = snapper.snap(24.94, 60.17)
    assert nodes.shape == dist.shape == (1,)
    nodes, dist = snapper.snap([], [])
    assert nodes.size == dist.size == 0


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        ([math.nan], [60.0]),
        ([24.9], [math.inf]),
        ([200.0], [60.0]),
        ([24.9], [-91.0]),
        ([1, 2], [3]),
    ],
)
def test_invalid_coordinates(
    helsinki: dict[str, StreetGraph], lon: list[float], lat: list[float]
) -> None:
    with pytest.raises(InvalidGeometry):
        Snapper(helsinki["drive"]).snap(lon, lat)
