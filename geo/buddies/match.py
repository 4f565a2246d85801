"""Map matching for buddy groups: routes -> undirected street edges of a mode's graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from scipy.sparse import csr_matrix

from geo._match_kernel import paths_kernel
from geo.graph import StreetGraph
from geo.snap import Snapper

# Vertices, not densified samples, are snapped: graphs are simplified at intersections, so a
# sample mid-block would snap to a node of another street and bend the path.
MATCH_MAX_SNAP_M = 150.0
# Two on-network vertices farther apart than this (the route leaves the network in between)
# are a gap; so are consecutive nodes not joined within the time limit.
MATCH_MAX_GAP_M = 2_000.0
MATCH_MAX_GAP_S = 1_800.0
_M_PER_DEG = 111_320.0


@dataclass(frozen=True)
class Matching:
    """Routes as undirected street edges of one graph.

    ``edge_route[i]`` is the route of the i-th (route, edge) pair, ``edge_key[i]`` the
    undirected edge ``min(u, v) * n_nodes + max(u, v)``; each pair once.
    """

    n_routes: int
    edge_route: NDArray[np.int64]
    edge_key: NDArray[np.int64]
    edge_length_m: NDArray[np.float64]
    edge_time_s: NDArray[np.float64]
    length_m: NDArray[np.float64]  # per route (0 when unmatched)
    unmatched: dict[int, str]  # route index -> reason


def edge_lengths_m(graph: StreetGraph) -> NDArray[np.float64]:
    """Great-circle length of every forward CSR edge (equirectangular; edges are short).

    Parameters
    ----------
    graph
        Compiled graph.

    Returns
    -------
    float64 per edge, in CSR order.
    """
    cached = graph._cache.get("buddies_edge_length_m")
    if cached is not None:
        return np.asarray(cached)
    u = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
    v = graph.indices
    coslat = np.cos(np.radians((graph.lat[u] + graph.lat[v]) / 2))
    dx = (graph.lon[v] - graph.lon[u]) * coslat
    dy = graph.lat[v] - graph.lat[u]
    length = np.hypot(dx, dy) * _M_PER_DEG
    graph._cache["buddies_edge_length_m"] = length
    return length


def match_routes(
    graph: StreetGraph,
    snapper: Snapper,
    lines: Sequence[shapely.LineString],
    *,
    max_snap_m: float = MATCH_MAX_SNAP_M,
    max_gap_m: float = MATCH_MAX_GAP_M,
    max_gap_s: float = MATCH_MAX_GAP_S,
) -> Matching:
    """Map matching: the shortest path on the graph through a route's snapped vertices.

    Every distinct vertex of the routes is snapped to its nearest node in one KD-tree call, and
    consecutive distinct nodes are joined by a bounded point-to-point Dijkstra (compiled).
    A route is unmatched, with its reason, when most of it lies off the network, when two
    on-network vertices are more than ``max_gap_m`` apart, when two consecutive nodes
    are not connected within ``max_gap_s``, or when it covers no edge.

    Parameters
    ----------
    graph
        Graph of the routes' travel mode.
    snapper
        Snapper of ``graph``.
    lines
        Routes in lon/lat.
    max_snap_m
        Vertices farther than this from the network are off it.
    max_gap_m, max_gap_s
        Largest off-network stretch, and largest travel time between consecutive nodes.

    Returns
    -------
    The matching.
    """
    n_routes = len(lines)
    unmatched: dict[int, str] = {}
    arr = np.asarray(lines, dtype=object)
    if arr.size:
        coords, route = shapely.get_coordinates(arr, return_index=True)
        lon, lat = coords[:, 0].copy(), coords[:, 1].copy()
        route = route.astype(np.int64)
    else:
        route, lon, lat = np.empty(0, np.int64), np.empty(0), np.empty(0)
    node, dist = _snap_distinct(snapper, lon, lat)
    counts = np.bincount(route, minlength=n_routes)
    on = dist <= max_snap_m
    on_counts = np.bincount(route[on], minlength=n_routes)
    for r in np.flatnonzero((counts == 0) | (on_counts * 2 < counts)):
        unmatched[int(r)] = (
            f"off the {graph.mode} network: {counts[r] - on_counts[r]} of {counts[r]} "
            f"points farther than {max_snap_m:g} m from a street"
        )
    # off-network stretches between kept samples
    r_on, lon_on, lat_on, n_on = route[on], lon[on], lat[on], node[on].astype(np.int64)
    same = np.r_[False, r_on[1:] == r_on[:-1]]
    coslat = np.cos(np.radians(lat_on))
    gap = np.zeros(r_on.size)
    gap[1:] = np.hypot((lon_on[1:] - lon_on[:-1]) * coslat[1:], lat_on[1:] - lat_on[:-1])
    gap *= _M_PER_DEG
    long_gap = same & (gap > max_gap_m)
    for r in np.unique(r_on[long_gap]):
        unmatched.setdefault(
            int(r), f"a gap: more than {max_gap_m:g} m between two points on the network"
        )
    # consecutive distinct nodes of a route: the pairs to join
    step = same & (n_on != np.r_[-1, n_on[:-1]])
    pair_at = np.flatnonzero(step)
    src = n_on[pair_at - 1]
    dst = n_on[pair_at]
    pair_route = r_on[pair_at]
    bad = np.zeros(n_routes, dtype=bool)
    bad[list(unmatched)] = True
    keep = ~bad[pair_route]
    src, dst, pair_route = src[keep], dst[keep], pair_route[keep]
    path_nodes, path_start, path_end = _paths(graph, src, dst, max_gap_s)
    failed = path_end < 0
    for r in np.unique(pair_route[failed]):
        unmatched.setdefault(
            int(r),
            f"a gap: two consecutive points are not connected on the {graph.mode} network "
            f"within {max_gap_s:g} s",
        )
    # edges (prev -> node) along every pair's path; the output holds the paths back to back
    ok = ~failed
    lens = (path_end - path_start)[ok]
    e_route = np.repeat(pair_route[ok], lens)
    e_v = path_nodes
    e_u = np.empty_like(e_v)
    if e_v.size:
        e_u[1:] = e_v[:-1]
        nz = lens > 0
        e_u[(np.cumsum(lens) - lens)[nz]] = src[ok][nz]
    bad = np.zeros(n_routes, dtype=bool)
    bad[list(unmatched)] = True
    keep_e = ~bad[e_route] if e_route.size else np.zeros(0, dtype=bool)
    e_route, e_u, e_v = e_route[keep_e], e_u[keep_e], e_v[keep_e]
    n = graph.n_nodes
    lo = np.minimum(e_u, e_v)
    hi = np.maximum(e_u, e_v)
    key = lo * n + hi
    combo = np.unique(e_route * (n * n) + key) if key.size else np.empty(0, np.int64)
    e_route = combo // (n * n)
    key = combo % (n * n)
    length_m, time_s = _edge_weights(graph, key // n, key % n)
    route_len = np.bincount(e_route, weights=length_m, minlength=n_routes)
    for r in np.flatnonzero(route_len <= 0):
        unmatched.setdefault(int(r), f"covers no street of the {graph.mode} network")
    return Matching(
        n_routes=n_routes,
        edge_route=e_route.astype(np.int64),
        edge_key=key.astype(np.int64),
        edge_length_m=length_m,
        edge_time_s=time_s,
        length_m=route_len.astype(np.float64),
        unmatched=dict(sorted(unmatched.items())),
    )


def _snap_distinct(
    snapper: Snapper, lon: NDArray[np.float64], lat: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Snap each distinct point once: commutes share most of their vertices."""
    if lon.size == 0:
        return np.empty(0, np.int64), np.empty(0)
    distinct, back = np.unique(lon + 1j * lat, return_inverse=True)
    node, dist = snapper.snap(distinct.real.copy(), distinct.imag.copy())
    return np.asarray(node, dtype=np.int64)[back], np.asarray(dist, dtype=np.float64)[back]


def _paths(
    graph: StreetGraph, src: NDArray[np.int64], dst: NDArray[np.int64], max_gap_s: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Run the compiled point-to-point searches, growing the output buffer when needed."""
    n = graph.n_nodes
    dist = np.full(n, np.inf)
    pred = np.full(n, -1, dtype=np.int64)
    touched = np.empty(n, dtype=np.int64)
    hk = np.empty(graph.n_edges + 1)
    hv = np.empty(graph.n_edges + 1, dtype=np.int64)
    limit = np.full(src.size, float(max_gap_s))
    cap = max(16, 4 * src.size)
    while True:
        out = np.empty(cap, dtype=np.int64)
        path_end, n_out = paths_kernel(
            graph.indptr,
            graph.indices,
            graph.travel_time_s.astype(np.float64),
            src,
            dst,
            limit,
            dist,
            pred,
            touched,
            hk,
            hv,
            out,
        )
        if n_out >= 0:
            break
        cap *= 4
    valid_end = np.where(path_end >= 0, path_end, 0)
    start = np.zeros(src.size, dtype=np.int64)
    if src.size > 1:
        start[1:] = np.maximum.accumulate(valid_end)[:-1]
    return out[:n_out], start, path_end


def _edge_weights(
    graph: StreetGraph, u: NDArray[np.int64], v: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Length and travel time of undirected edges {u, v}: the faster direction present."""
    if u.size == 0:
        return np.empty(0), np.empty(0)
    lengths = edge_lengths_m(graph)
    csr_len = csr_matrix(
        (lengths + 1e-9, graph.indices, graph.indptr), shape=(graph.n_nodes, graph.n_nodes)
    )
    csr_tt = csr_matrix(
        (graph.travel_time_s.astype(np.float64) + 1e-9, graph.indices, graph.indptr),
        shape=(graph.n_nodes, graph.n_nodes),
    )
    fl = np.asarray(csr_len[u, v]).ravel()
    bl = np.asarray(csr_len[v, u]).ravel()
    ft = np.asarray(csr_tt[u, v]).ravel()
    bt = np.asarray(csr_tt[v, u]).ravel()
    use_f = ft > 0
    return np.where(use_f, fl, bl), np.where(use_f, ft, bt)
