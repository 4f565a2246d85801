"""Buddy groups: map-matched route overlap -> similarity graph -> capped groups, point contacts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import igraph as ig
import leidenalg
import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix

from geo._match_kernel import paths_kernel
from geo.graph import StreetGraph
from geo.route import k_nearest_field
from geo.snap import Snapper

HARD_MAX_SIZE = 10
DEFAULT_MAX_SIZE = 10
DEFAULT_MIN_SIZE = 3
DEFAULT_MAX_GROUPS_PER_CONTACT = 3
DEFAULT_CONTACT_MAX_ETA_S = 900.0
# Vertices, not densified samples, are snapped: graphs are simplified at intersections, so a
# sample mid-block would snap to a node of another street and bend the path.
MATCH_MAX_SNAP_M = 150.0
# Two on-network vertices farther apart than this (the route leaves the network in between)
# are a gap; so are consecutive nodes not joined within the time limit.
MATCH_MAX_GAP_M = 2_000.0
MATCH_MAX_GAP_S = 1_800.0
# Home proximity weighs at most this much against a route similarity in [0, 1]: a tie-breaker.
HOME_WEIGHT = 0.05
HOME_NEIGHBOURS = 4
DEFAULT_RESOLUTION = 0.1
DEFAULT_MAX_LINKS = 20
HOME_MAX_S = 600.0
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


@dataclass(frozen=True)
class Similarity:
    """Member-by-member sparse matrices (symmetric, zero diagonal)."""

    weight: csr_matrix  # normalised route overlap plus home proximity: the partition's input
    shared_minutes: csr_matrix  # minutes a week on shared streets at the same time


@dataclass(frozen=True)
class Quality:
    """How good a grouping is, against baselines of the same caps."""

    mean_shared_minutes: float
    random_baseline: float
    locality_baseline: float
    placed_share: float
    size_histogram: dict[int, int]
    contact_eta_s: list[float | None]


@dataclass(frozen=True)
class Proposal:
    """Groups (member indices), point contacts, unplaced members and the quality report."""

    groups: list[list[int]]
    point_contact: list[int | None]
    contact_eta_s: list[float | None]
    shared_minutes: list[float]
    unplaced: list[int]
    no_contact: list[int]  # group indices without a contact within the limit
    unmatched: dict[int, str]
    quality: Quality
    timings_s: dict[str, float] = field(default_factory=dict)


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

    Every vertex of every route is snapped to its nearest node in one KD-tree call, and
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
    node, dist = snapper.snap(lon, lat) if route.size else (np.empty(0, np.int32), np.empty(0))
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


def _overlap(
    mask_a: NDArray[np.int64],
    start_a: NDArray[np.float64],
    end_a: NDArray[np.float64],
    mask_b: NDArray[np.int64],
    start_b: NDArray[np.float64],
    end_b: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Shared weekdays and overlapping minutes a day of two weekly windows."""
    ea = np.where(end_a <= start_a, end_a + 86_400, end_a)
    eb = np.where(end_b <= start_b, end_b + 86_400, end_b)
    hours = np.clip(np.minimum(ea, eb) - np.maximum(start_a, start_b), 0, None) / 60.0
    shared = mask_a & mask_b
    days = np.zeros(shared.shape, dtype=np.int64)
    for bit in range(7):
        days += (shared >> bit) & 1
    return days.astype(np.float64), np.asarray(hours, dtype=np.float64)


def similarity(
    matching: Matching,
    route_member: ArrayLike,
    days: ArrayLike,
    start_s: ArrayLike,
    end_s: ArrayLike,
    n_members: int,
    *,
    home_node: ArrayLike | None = None,
    graph: StreetGraph | None = None,
    home_weight: float = HOME_WEIGHT,
    home_neighbours: int = HOME_NEIGHBOURS,
    home_max_s: float = HOME_MAX_S,
) -> Similarity:
    """Sparse member similarity from an inverted index edge -> routes.

    Routes sharing an edge meet in the product ``A W Aᵀ`` of the route-by-edge incidence
    matrix ``A`` with the edge lengths ``W`` (scipy's sparse product walks each edge's
    routes: an inverted index, never all pairs). A route pair scores shared metres x the
    minutes a week its windows overlap (same weekday, overlapping hours), summed per member
    pair and normalised by ``sqrt(self_a * self_b)`` (cosine-like, at most 1) so that long
    commutes do not swamp short ones. Home proximity adds
    ``home_weight * (1 - t / home_max_s)`` for the ``home_neighbours`` nearest homes by
    travel time ``t``: a tie-breaker, and the only link of members without routes.

    Parameters
    ----------
    matching
        Output of :func:`match_routes`.
    route_member
        Member index (``0..n_members-1``) per route.
    days, start_s, end_s
        Weekday bit mask and window (seconds after midnight) per route.
    n_members
        Number of members.
    home_node, graph
        Home-zone node per member (-1 for none) and the graph to measure travel time on;
        both None to leave home proximity out.
    home_weight, home_neighbours, home_max_s
        Weight, neighbour count and time limit of the home proximity term.

    Returns
    -------
    The similarity matrices.
    """
    member_of = np.asarray(route_member, dtype=np.int64)
    mask = np.asarray(days, dtype=np.int64)
    start = np.asarray(start_s, dtype=np.float64)
    end = np.asarray(end_s, dtype=np.float64)
    nr = matching.n_routes
    ok = np.ones(nr, dtype=bool)
    ok[list(matching.unmatched)] = False
    weight = coo_matrix((n_members, n_members)).tocsr()
    shared = coo_matrix((n_members, n_members)).tocsr()
    if matching.edge_key.size:
        keys, col = np.unique(matching.edge_key, return_inverse=True)
        a = csr_matrix((np.ones(col.size), (matching.edge_route, col)), shape=(nr, keys.size))
        length_of = np.zeros(keys.size)
        time_of = np.zeros(keys.size)
        length_of[col] = matching.edge_length_m
        time_of[col] = matching.edge_time_s
        at = a.T.tocsr()
        shared_m = (a.multiply(length_of)).tocsr() @ at
        shared_s = (a.multiply(time_of)).tocsr() @ at
        shared_m = shared_m.tocoo()
        shared_s_csr = shared_s.tocsr()
        i, j = shared_m.row.astype(np.int64), shared_m.col.astype(np.int64)
        off = i != j
        i, j, sm = i[off], j[off], shared_m.data[off]
        ss = np.asarray(shared_s_csr[i, j]).ravel()
        n_days, hours = _overlap(mask[i], start[i], end[i], mask[j], start[j], end[j])
        minutes = n_days * hours
        live = minutes > 0
        i, j, sm, ss = i[live], j[live], sm[live], ss[live]
        n_days, hours, minutes = n_days[live], hours[live], minutes[live]
        score = sm * minutes
        # minutes a week both are on shared streets: the overlap, no longer than the walk
        together = n_days * np.minimum(hours, ss / 60.0)
        whole_days, whole_hours = _overlap(mask, start, end, mask, start, end)
        whole = whole_days * whole_hours
        self_score = np.bincount(
            member_of, weights=np.where(ok, matching.length_m * whole, 0.0), minlength=n_members
        )
        mi, mj = member_of[i], member_of[j]
        other = mi != mj
        mi, mj, score, together = mi[other], mj[other], score[other], together[other]
        raw = coo_matrix((score, (mi, mj)), shape=(n_members, n_members)).tocsr()
        raw.sum_duplicates()
        r = raw.tocoo()
        norm = np.sqrt(self_score[r.row] * self_score[r.col])
        weight = csr_matrix(
            (np.where(norm > 0, r.data / np.where(norm > 0, norm, 1), 0.0), (r.row, r.col)),
            shape=(n_members, n_members),
        )
        shared = coo_matrix((together, (mi, mj)), shape=(n_members, n_members)).tocsr()
        shared.sum_duplicates()
    if home_node is not None and graph is not None and home_weight > 0:
        weight = weight + _home_proximity(
            graph,
            np.asarray(home_node, dtype=np.int64),
            n_members,
            weight=home_weight,
            k=home_neighbours,
            max_s=home_max_s,
        )
    weight = ((weight + weight.T) / 2).tocsr()
    weight.setdiag(0)
    weight.eliminate_zeros()
    return Similarity(weight=weight, shared_minutes=shared.tocsr())


def _home_proximity(
    graph: StreetGraph,
    home_node: NDArray[np.int64],
    n_members: int,
    *,
    weight: float,
    k: int,
    max_s: float,
) -> csr_matrix:
    """Each member's ``k`` nearest other homes by travel time, linearly weighted."""
    has = np.flatnonzero(home_node >= 0)
    if has.size < 2:
        return csr_matrix((n_members, n_members))
    times, sources = k_nearest_field(
        graph, home_node[has], has, k=k + 1, max_time_s=max_s, return_sources=True
    )
    t = np.asarray(times)[home_node[has]]
    s = np.asarray(sources)[home_node[has]]
    rows = np.repeat(has, k + 1)
    cols = s.ravel()
    tt = t.ravel()
    keep = (cols >= 0) & (cols != rows) & np.isfinite(tt)
    w = weight * (1.0 - tt[keep] / max_s)
    return csr_matrix(
        (np.clip(w, 1e-6, None), (rows[keep], cols[keep])), shape=(n_members, n_members)
    )


def partition(
    weight: csr_matrix,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    min_size: int = DEFAULT_MIN_SIZE,
    keep: Sequence[Sequence[int]] = (),
    seed: int = 0,
    resolution: float = DEFAULT_RESOLUTION,
    max_links: int = DEFAULT_MAX_LINKS,
) -> tuple[list[list[int]], list[int]]:
    """Leiden communities (CPM, size-capped) then small ones merged by best overlap.

    Leiden (``leidenalg``, constant Potts model) on the weighted similarity graph with
    ``max_comm_size``
    ``max_size``, seeded for determinism. Groups of ``keep`` stay fixed together, for the
    members still linked to another member of their old group, so that a rebuild only
    places the rest. Communities below ``min_size`` join the group they overlap most that
    has room; members linked to no one are unplaced.

    Parameters
    ----------
    weight
        Symmetric sparse similarity, members x members.
    max_size
        Largest group (at most :data:`HARD_MAX_SIZE`).
    min_size
        Smallest group where possible.
    keep
        Previous groups, as lists of member indices.
    seed
        Leiden's seed.
    resolution
        CPM resolution: the mean link (similarities are in [0, 1]) a member needs to a
        community to join it during Leiden; weaker links are used by the merge step only.
    max_links
        Leiden sees each member's ``max_links`` strongest links only (and those naming it):
        a group holds at most 10, so weaker links cannot change it, and Leiden's time
        grows with the links.

    Returns
    -------
    groups
        Sorted member indices per group, groups sorted by first member.
    unplaced
        Members in no group.
    """
    if not 1 <= max_size <= HARD_MAX_SIZE:
        msg = f"max_size must be within [1, {HARD_MAX_SIZE}], got {max_size}"
        raise ValueError(msg)
    if not 1 <= min_size <= max_size:
        msg = f"min_size must be within [1, max_size={max_size}], got {min_size}"
        raise ValueError(msg)
    n = weight.shape[0]
    w = _strongest_links(weight.tocsr(), max_links).tocoo()
    upper = w.row < w.col
    rows, cols, data = w.row[upper], w.col[upper], w.data[upper]
    linked = np.zeros(n, dtype=bool)
    linked[rows] = True
    linked[cols] = True
    g = ig.Graph(n=n, edges=np.column_stack([rows, cols]).tolist())
    membership = np.arange(n)
    fixed = np.zeros(n, dtype=bool)
    wcsr = weight.tocsr()
    for k, old in enumerate(keep):
        old_a = np.array([m for m in old if 0 <= m < n], dtype=np.int64)[:max_size]
        if old_a.size < 2:
            continue
        sub = wcsr[old_a][:, old_a]
        still = np.asarray((sub > 0).sum(axis=1)).ravel() > 0
        stay = old_a[still]
        if stay.size >= 2:
            membership[stay] = n + k
            fixed[stay] = True
    _, membership = np.unique(membership, return_inverse=True)
    # CPM, not modularity: no resolution limit, so small tight groups form on a big graph;
    # a member joins a community only when its mean link to it exceeds the resolution
    res = resolution
    part = leidenalg.CPMVertexPartition(
        g,
        initial_membership=membership.tolist(),
        weights=data.tolist(),
        resolution_parameter=res,
    )
    opt = leidenalg.Optimiser()
    opt.set_rng_seed(seed)
    opt.max_comm_size = max_size
    opt.optimise_partition(part, n_iterations=2, is_membership_fixed=fixed.tolist())
    label = np.asarray(part.membership, dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for m in range(n):
        if linked[m]:
            groups.setdefault(int(label[m]), []).append(m)
    groups = _split(groups, max_size)
    groups = _merge_small(groups, wcsr, max_size=max_size, min_size=min_size)
    out = sorted((sorted(v) for v in groups.values() if len(v) >= 2), key=lambda v: v[0])
    placed = {m for v in out for m in v}
    return out, [m for m in range(n) if m not in placed]


def _strongest_links(weight: csr_matrix, k: int) -> csr_matrix:
    """Keep each row's ``k`` largest entries, then symmetrise by the maximum."""
    w = weight.tocoo()
    order = np.lexsort((-w.data, w.row))
    row, col, data = w.row[order], w.col[order], w.data[order]
    starts = np.searchsorted(row, row, side="left")
    keep = (np.arange(row.size) - starts) < k
    top = csr_matrix((data[keep], (row[keep], col[keep])), shape=weight.shape)
    return top.maximum(top.T).tocsr()


def _split(groups: dict[int, list[int]], max_size: int) -> dict[int, list[int]]:
    """Cut any community above the cap into consecutive chunks (Leiden's cap should hold)."""
    out: dict[int, list[int]] = {}
    nxt = max(groups, default=-1) + 1
    for key, members in groups.items():
        if len(members) <= max_size:
            out[key] = members
            continue
        for c in range(0, len(members), max_size):
            out[nxt] = members[c : c + max_size]
            nxt += 1
    return out


def _merge_small(
    groups: dict[int, list[int]], weight: csr_matrix, *, max_size: int, min_size: int
) -> dict[int, list[int]]:
    """Move groups below ``min_size`` whole into the group they link to most that has room.

    Smallest first, a few passes (a merge can make room or create a new best target); a
    group that fits nowhere whole is then dissolved member by member.
    """
    indptr, indices, data = weight.indptr, weight.indices, weight.data
    label = np.full(weight.shape[0], -1, dtype=np.int64)
    for g, ms in groups.items():
        label[np.asarray(ms, dtype=np.int64)] = g
    for _ in range(3):
        changed = False
        small = sorted(
            (g for g, ms in groups.items() if len(ms) < min_size), key=lambda g: (len(groups[g]), g)
        )
        for g in small:
            members = groups.get(g)
            if not members or len(members) >= min_size:
                continue
            m_a = np.asarray(members, dtype=np.int64)
            cols = np.concatenate([indices[indptr[m] : indptr[m + 1]] for m in m_a])
            vals = np.concatenate([data[indptr[m] : indptr[m + 1]] for m in m_a])
            other = label[cols]
            ok = (other >= 0) & (other != g)
            if not ok.any():
                continue
            targets, inv = np.unique(other[ok], return_inverse=True)
            score = np.bincount(inv, weights=vals[ok])
            room = np.array([len(groups[int(h)]) + len(members) <= max_size for h in targets])
            if not room.any():
                continue
            score[~room] = -1.0
            best = int(targets[int(np.argmax(score))])
            groups[best].extend(members)
            label[m_a] = best
            del groups[g]
            changed = True
        if not changed:
            break
    # a small group that fits nowhere whole: its members join their best groups one by one
    for g in [g for g, ms in groups.items() if len(ms) < min_size]:
        for m in list(groups[g]):
            cols = indices[indptr[m] : indptr[m + 1]]
            vals = data[indptr[m] : indptr[m + 1]]
            other = label[cols]
            ok = (other >= 0) & (other != g)
            if not ok.any():
                continue
            targets, inv = np.unique(other[ok], return_inverse=True)
            score = np.bincount(inv, weights=vals[ok])
            room = np.array([len(groups[int(h)]) < max_size for h in targets])
            if not room.any():
                continue
            score[~room] = -1.0
            best = int(targets[int(np.argmax(score))])
            groups[best].append(m)
            groups[g].remove(m)
            label[m] = best
        if not groups[g]:
            del groups[g]
    return groups


def assign_contacts(
    graph: StreetGraph,
    group_nodes: Sequence[NDArray[np.int64]],
    defence_node: ArrayLike,
    *,
    max_groups_per_contact: int = DEFAULT_MAX_GROUPS_PER_CONTACT,
    max_eta_s: float = DEFAULT_CONTACT_MAX_ETA_S,
    candidates: int = 5,
) -> tuple[list[int | None], list[float | None]]:
    """Point contacts as a min-cost assignment of defence members to groups.

    A group's cost for a defence member is the mean travel time from the member to the
    group's usual positions (``group_nodes``), over the ``candidates`` defence members
    nearest each position (one multi-label Dijkstra). Each defence member is replicated
    ``max_groups_per_contact`` times and the Hungarian method (``linear_sum_assignment``)
    picks the assignment of least total time; a group whose only options are beyond
    ``max_eta_s`` gets none.

    Parameters
    ----------
    graph
        Graph of travel.
    group_nodes
        Nodes of each group's members' usual positions.
    defence_node
        Node per defence member (the index into this array is the answer's id).
    max_groups_per_contact
        Capacity of a defence member.
    max_eta_s
        Largest mean travel time accepted.
    candidates
        Nearest defence members considered per position.

    Returns
    -------
    contact
        Index into ``defence_node`` per group, or None.
    eta_s
        The contact's mean travel time per group, or None.
    """
    dnode = np.asarray(defence_node, dtype=np.int64)
    ng = len(group_nodes)
    if ng == 0 or dnode.size == 0:
        return [None] * ng, [None] * ng
    k = min(candidates, dnode.size)
    times, sources = k_nearest_field(
        graph,
        dnode,
        np.arange(dnode.size),
        k=k,
        max_time_s=max_eta_s * 2,
        direction="from_sources",
        return_sources=True,
    )
    times = np.asarray(times, dtype=np.float64)
    sources = np.asarray(sources)
    cost: dict[tuple[int, int], float] = {}
    for gi, nodes in enumerate(group_nodes):
        nodes = np.asarray(nodes, dtype=np.int64)
        tot: dict[int, list[float]] = {}
        for v in nodes:
            for t, s in zip(times[v], sources[v], strict=True):
                if s >= 0 and np.isfinite(t):
                    tot.setdefault(int(s), []).append(float(t))
        for s, ts in tot.items():
            # positions the contact does not reach count at the search limit
            mean = (sum(ts) + (len(nodes) - len(ts)) * max_eta_s * 2) / len(nodes)
            if mean <= max_eta_s:
                cost[(gi, s)] = mean
    cols = sorted({s for _, s in cost})
    contact: list[int | None] = [None] * ng
    eta: list[float | None] = [None] * ng
    if not cols:
        return contact, eta
    big = max_eta_s * 1e3
    col_of = {s: c for c, s in enumerate(cols)}
    mat = np.full((ng, len(cols)), big)
    for (gi, s), c in cost.items():
        mat[gi, col_of[s]] = c
    rep = np.repeat(mat, max_groups_per_contact, axis=1)
    r, c = linear_sum_assignment(rep)
    for gi, cj in zip(r, c, strict=True):
        if rep[gi, cj] < big:
            contact[int(gi)] = cols[cj // max_groups_per_contact]
            eta[int(gi)] = float(rep[gi, cj])
    return contact, eta


def mean_shared_minutes(shared: csr_matrix, groups: Sequence[Sequence[int]]) -> float:
    """Mean over grouped members of the minutes a week shared with their own group.

    Parameters
    ----------
    shared
        Member x member shared minutes.
    groups
        Member indices per group.

    Returns
    -------
    The mean (0 for no grouped member).
    """
    n = shared.shape[0]
    label = np.full(n, -1, dtype=np.int64)
    for g, ms in enumerate(groups):
        label[np.asarray(ms, dtype=np.int64)] = g
    grouped = int((label >= 0).sum())
    if grouped == 0:
        return 0.0
    s = shared.tocoo()
    same = (label[s.row] >= 0) & (label[s.row] == label[s.col])
    return float(s.data[same].sum() / grouped)


def shared_minutes_per_group(shared: csr_matrix, groups: Sequence[Sequence[int]]) -> list[float]:
    """Per group, the mean minutes a week a member shares with the rest of its group."""
    n = shared.shape[0]
    label = np.full(n, -1, dtype=np.int64)
    for g, ms in enumerate(groups):
        label[np.asarray(ms, dtype=np.int64)] = g
    s = shared.tocoo()
    same = (label[s.row] >= 0) & (label[s.row] == label[s.col])
    tot = np.bincount(label[s.row[same]], weights=s.data[same], minlength=len(groups))
    return [float(t / len(ms)) for t, ms in zip(tot, groups, strict=True)]


def random_groups(sizes: Sequence[int], population: Sequence[int], *, seed: int) -> list[list[int]]:
    """Random groups of the given sizes drawn from ``population`` (baseline)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.asarray(population, dtype=np.int64))
    out, at = [], 0
    for s in sizes:
        out.append(perm[at : at + s].tolist())
        at += s
    return out


def locality_groups(
    lon: ArrayLike, lat: ArrayLike, members: Sequence[int], *, max_size: int
) -> list[list[int]]:
    """Home-zone centres clustered by recursive median bisection into groups of <= max_size.

    Parameters
    ----------
    lon, lat
        Home-zone centre per member (all members).
    members
        Members to group.
    max_size
        Cap.

    Returns
    -------
    Member indices per group.
    """
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    idx = np.asarray(members, dtype=np.int64)
    if idx.size:
        x = x * np.cos(np.radians(float(np.nanmean(y[idx]))))
    out: list[list[int]] = []
    stack = [idx]
    while stack:
        cur = stack.pop()
        if cur.size <= max_size:
            if cur.size:
                out.append(cur.tolist())
            continue
        # split on the wider axis, into halves whose sizes keep groups full
        axis = x if np.ptp(x[cur]) >= np.ptp(y[cur]) else y
        order = cur[np.argsort(axis[cur], kind="stable")]
        chunks = math.ceil(cur.size / max_size)
        cut = (chunks // 2) * max_size if chunks > 1 else cur.size // 2
        stack.extend([order[:cut], order[cut:]])
    return out


def propose(
    graph: StreetGraph,
    snapper: Snapper,
    *,
    n_members: int,
    route_member: ArrayLike,
    route_lines: Sequence[shapely.LineString],
    route_days: ArrayLike,
    route_start_s: ArrayLike,
    route_end_s: ArrayLike,
    home_lon: ArrayLike,
    home_lat: ArrayLike,
    defence: ArrayLike,
    max_size: int = DEFAULT_MAX_SIZE,
    min_size: int = DEFAULT_MIN_SIZE,
    keep: Sequence[Sequence[int]] = (),
    max_groups_per_contact: int = DEFAULT_MAX_GROUPS_PER_CONTACT,
    contact_max_eta_s: float = DEFAULT_CONTACT_MAX_ETA_S,
    seed: int = 0,
    clock: Any = None,
) -> Proposal:
    """A buddy-group proposal: match, similarity, partition, point contacts, quality.

    Parameters
    ----------
    graph, snapper
        The mode's graph and its snapper.
    n_members
        Members are ``0..n_members-1``.
    route_member, route_lines, route_days, route_start_s, route_end_s
        Per route: member, line, weekday mask, window.
    home_lon, home_lat
        Home-zone centre per member (NaN for none).
    defence
        Member indices holding the defence role (point contact candidates).
    max_size, min_size, keep, seed
        See :func:`partition`.
    max_groups_per_contact, contact_max_eta_s
        See :func:`assign_contacts`.
    clock
        Zero-argument timer for the timings (e.g. ``time.perf_counter``); None for none.

    Returns
    -------
    The proposal.
    """
    tick = clock if clock is not None else (lambda: 0.0)
    timings: dict[str, float] = {}
    t0 = tick()
    matching = match_routes(graph, snapper, route_lines)
    t1 = tick()
    timings["map_matching_s"] = t1 - t0
    hlon = np.asarray(home_lon, dtype=np.float64)
    hlat = np.asarray(home_lat, dtype=np.float64)
    has_home = np.isfinite(hlon) & np.isfinite(hlat)
    home_node = np.full(n_members, -1, dtype=np.int64)
    if has_home.any():
        home_node[has_home] = snapper.snap(hlon[has_home], hlat[has_home])[0]
    sim = similarity(
        matching,
        route_member,
        route_days,
        route_start_s,
        route_end_s,
        n_members,
        home_node=home_node,
        graph=graph,
    )
    t2 = tick()
    timings["similarity_s"] = t2 - t1
    groups, unplaced = partition(
        sim.weight, max_size=max_size, min_size=min_size, keep=keep, seed=seed
    )
    t3 = tick()
    timings["partition_s"] = t3 - t2
    defence_a = np.asarray(defence, dtype=np.int64)
    defence_a = defence_a[home_node[defence_a] >= 0] if defence_a.size else defence_a
    group_nodes = [home_node[np.asarray(g)][home_node[np.asarray(g)] >= 0] for g in groups]
    contact_idx, eta = assign_contacts(
        graph,
        group_nodes,
        home_node[defence_a],
        max_groups_per_contact=max_groups_per_contact,
        max_eta_s=contact_max_eta_s,
    )
    contacts = [None if c is None else int(defence_a[c]) for c in contact_idx]
    t4 = tick()
    timings["contacts_s"] = t4 - t3
    per_group = shared_minutes_per_group(sim.shared_minutes, groups)
    sizes = [len(g) for g in groups]
    mean = mean_shared_minutes(sim.shared_minutes, groups)
    population = list(range(n_members))
    rand = (
        float(
            np.mean(
                [
                    mean_shared_minutes(
                        sim.shared_minutes, random_groups(sizes, population, seed=seed + s)
                    )
                    for s in range(5)
                ]
            )
        )
        if groups
        else 0.0
    )
    local_members = [m for m in population if has_home[m]]
    local = mean_shared_minutes(
        sim.shared_minutes, locality_groups(hlon, hlat, local_members, max_size=max_size)
    )
    hist: dict[int, int] = {}
    for s in sizes:
        hist[s] = hist.get(s, 0) + 1
    quality = Quality(
        mean_shared_minutes=mean,
        random_baseline=rand,
        locality_baseline=local,
        placed_share=(n_members - len(unplaced)) / n_members if n_members else 0.0,
        size_histogram=dict(sorted(hist.items())),
        contact_eta_s=eta,
    )
    timings["quality_s"] = tick() - t4
    return Proposal(
        groups=groups,
        point_contact=contacts,
        contact_eta_s=eta,
        shared_minutes=per_group,
        unplaced=unplaced,
        no_contact=[i for i, c in enumerate(contacts) if c is None],
        unmatched={int(r): why for r, why in matching.unmatched.items()},
        quality=quality,
        timings_s=timings,
    )
