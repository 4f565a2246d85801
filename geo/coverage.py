"""Responder coverage of the street network: k-nearest fields, p_covered, H3 cells, recruitment.

Everything here is pure NumPy/SciPy/h3: the responders' anchors, graphs and times are
arguments. The field itself is :func:`geo.route.k_nearest_field` (no second search).

Mode ``all`` (several travel modes at once): each mode's field is computed on its own
graph from its own responders, then *transferred* to one set of evaluation nodes (the
walk graph's, where people are): an evaluation node takes the labels of its nearest node
on the other graph plus the final approach on foot (snap distance / walk speed), as an
alert point does; a node farther than ``max_snap_m`` from that graph gets none. A member
has one mode, so the labels of different modes belong to different responders and the
merged field is the k smallest per row (:func:`merge_fields`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import h3
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from geo import _kernels
from geo.graph import StreetGraph
from geo.route import k_nearest_field

H3_RES_MIN = 7
H3_RES_MAX = 10
K_MAX = 5
# Upper bound of the labels kept per node for p_covered (see labels_for_target).
P_LABELS = 12
_EARTH_M = 6_371_008.8


@dataclass(frozen=True)
class Field:
    """Per evaluation node, the nearest distinct responders: times ascending, source -1 if none."""

    times_s: NDArray[np.float32]  # (n, L)
    sources: NDArray[np.int64]  # (n, L)


def mode_field(
    graph: StreetGraph,
    source_nodes: ArrayLike,
    source_ids: ArrayLike,
    *,
    labels: int,
    max_time_s: float,
    offset_s: ArrayLike | None = None,
    far_labels: int | None = None,
    near_time_s: float = math.inf,
) -> Field:
    """Field of one mode on its own graph: :func:`geo.route.k_nearest_field` towards each node.

    With ``far_labels``, one search keeps ``labels`` responders up to ``near_time_s`` (the
    arrival limit: counts, p_covered) and only ``far_labels`` beyond, up to ``max_time_s``
    (the times of the 1st..k-th shown on the map).

    Parameters
    ----------
    graph
        The mode's graph.
    source_nodes, source_ids
        Anchor nodes and the responder (dense number) of each anchor.
    labels
        Distinct responders kept per node.
    max_time_s
        Search horizon; times beyond stay inf.
    offset_s
        Seconds added per anchor (mobilisation delay).
    far_labels
        Labels kept beyond ``near_time_s`` (<= ``labels``); default ``labels``.
    near_time_s
        Time up to which all ``labels`` are kept (with ``far_labels``).

    Returns
    -------
    The field on ``graph``'s nodes; with ``far_labels``, columns from ``far_labels`` on
    hold only times up to ``near_time_s``.
    """
    times, sources = k_nearest_field(
        graph,
        source_nodes,
        source_ids,
        k=labels,
        max_time_s=max_time_s,
        direction="from_sources",
        offset_s=offset_s,
        return_sources=True,
        far_k=far_labels,
        near_time_s=near_time_s,
    )
    return Field(times_s=times, sources=sources)


def transfer(
    field: Field, node: NDArray[np.int64], approach_s: NDArray[np.float64], *, reachable: ArrayLike
) -> Field:
    """Field moved onto evaluation nodes: labels of each one's snapped node plus the approach.

    Parameters
    ----------
    field
        Field on the other graph.
    node
        Per evaluation node, its nearest node on that graph.
    approach_s
        Per evaluation node, the final approach (snap distance / walk speed).
    reachable
        Per evaluation node, False where the snap is beyond the service limit.

    Returns
    -------
    The field on the evaluation nodes.
    """
    ok = np.asarray(reachable, dtype=bool)
    times = field.times_s[node] + approach_s.astype(np.float32)[:, None]
    sources = field.sources[node].copy()
    times[~ok] = np.inf
    sources[~ok] = -1
    return Field(times_s=times, sources=sources)


def merge_fields(fields: list[Field], *, labels: int) -> Field:
    """The ``labels`` nearest responders per node over fields of disjoint responder sets."""
    if len(fields) == 1:
        f = fields[0]
        return Field(f.times_s[:, :labels], f.sources[:, :labels])
    times = np.concatenate([f.times_s for f in fields], axis=1)
    sources = np.concatenate([f.sources for f in fields], axis=1)
    order = np.argsort(times, axis=1, kind="stable")[:, :labels]
    return Field(
        np.take_along_axis(times, order, axis=1), np.take_along_axis(sources, order, axis=1)
    )


def p_covered(
    field: Field, acceptance: float | NDArray[np.float64], *, threshold_s: float
) -> NDArray[np.float64]:
    """Probability that at least one responder within ``threshold_s`` accepts: 1 - prod(1 - a_i).

    The expected-covering form (Daskin's MEXCLP) for volunteers. Over the labels the field
    keeps (the nearest distinct responders), so a lower bound when more arrive in time.

    Parameters
    ----------
    field
        The field.
    acceptance
        One acceptance probability for everyone, or one per responder (indexed by source).
    threshold_s
        Arrival limit.

    Returns
    -------
    float per node in [0, 1].
    """
    within = (field.times_s <= threshold_s) & (field.sources >= 0)
    if np.ndim(acceptance) == 0:
        a = np.where(within, float(acceptance), 0.0)
    else:
        acc = np.asarray(acceptance, dtype=np.float64)
        a = np.where(within, acc[np.maximum(field.sources, 0)], 0.0)
    out: NDArray[np.float64] = 1.0 - np.prod(1.0 - a, axis=1)
    return out


def labels_for_target(k: int, acceptance: float, target: float) -> int:
    """Responders per node needed to tell p_covered >= target: max(k, m) with 1-(1-a)^m >= target.

    With that many labels a node's gap decision is exact: p_covered is exact where fewer
    responders arrive in time, and otherwise a lower bound already at or above the target.
    Defaults (a = 0.35, target 0.9): 6. Capped at :data:`P_LABELS`.
    """
    if acceptance >= 1:
        return k
    m = (
        math.ceil(math.log(1 - target) / math.log(1 - acceptance) - 1e-12)
        if target < 1
        else P_LABELS
    )
    return max(k, min(max(m, 1), P_LABELS))


def node_street_m(graph: StreetGraph) -> NDArray[np.float64]:
    """Street length per node: half of every incident street (undirected, chord length).

    Each unordered node pair joined by an edge counts once (a two-way street is one street),
    its haversine length split between its two ends; the sum over nodes is the network's
    street length. Cached on the graph.
    """
    cached = graph._cache.get("coverage_street_m")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    u = np.repeat(np.arange(graph.n_nodes, dtype=np.int64), np.diff(graph.indptr))
    v = graph.indices.astype(np.int64)
    a, b = np.minimum(u, v), np.maximum(u, v)
    key = np.unique(a * graph.n_nodes + b)
    a, b = key // graph.n_nodes, key % graph.n_nodes
    length = haversine_m(graph.lon[a], graph.lat[a], graph.lon[b], graph.lat[b])
    half = length / 2
    out: NDArray[np.float64] = np.bincount(a, half, minlength=graph.n_nodes).astype(
        np.float64
    ) + np.bincount(b, half, minlength=graph.n_nodes).astype(np.float64)
    graph._cache["coverage_street_m"] = out
    return out


def haversine_m(
    lon1: NDArray[np.float64],
    lat1: NDArray[np.float64],
    lon2: NDArray[np.float64],
    lat2: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Great-circle distance in metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    out: NDArray[np.float64] = 2 * _EARTH_M * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
    return out


@dataclass(frozen=True)
class CellIndex:
    """Evaluation nodes grouped by H3 cell: ``cell[node]`` numbers the distinct ``ids``.

    ``order`` lists the nodes cell by cell, cell ``c`` owning
    ``order[indptr[c]:indptr[c + 1]]`` (built once per graph and resolution, so every
    aggregation is one pass instead of a sort).
    """

    res: int
    ids: list[str]  # H3 cell index strings
    cell: NDArray[np.int64]  # per node
    order: NDArray[np.int64]  # nodes sorted by cell
    indptr: NDArray[np.int64]  # (n_cells + 1,)

    @classmethod
    def of(cls, res: int, ids: list[str], cell: NDArray[np.int64]) -> CellIndex:
        """The index of nodes numbered by cell (``cell`` values index ``ids``)."""
        c = np.asarray(cell, dtype=np.int64)
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(c, minlength=len(ids)), out=indptr[1:])
        order = np.argsort(c, kind="stable").astype(np.int64)
        return cls(res=res, ids=ids, cell=c, order=order, indptr=indptr)


def check_res(res: int) -> None:
    """ValueError unless ``res`` is an allowed H3 resolution."""
    if not H3_RES_MIN <= res <= H3_RES_MAX:
        msg = f"res must be between {H3_RES_MIN} and {H3_RES_MAX}, got {res}"
        raise ValueError(msg)


def cell_index(graph: StreetGraph, res: int) -> CellIndex:
    """H3 cell of every node at ``res`` (``h3.latlng_to_cell``), cached on the graph."""
    check_res(res)
    key = f"coverage_cells_{res}"
    cached = graph._cache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    lats, lons = graph.lat.tolist(), graph.lon.tolist()
    raw = [h3.latlng_to_cell(y, x, res) for x, y in zip(lons, lats, strict=True)]
    ids, cell = np.unique(np.array(raw, dtype=object), return_inverse=True)
    out = CellIndex.of(res, [str(c) for c in ids], cell.astype(np.int64))
    graph._cache[key] = out
    return out


@dataclass(frozen=True)
class CellStats:
    """Per cell (in ``CellIndex.ids`` order): figures of the coverage map."""

    t1_s: NDArray[np.float64]  # median over the cell's nodes; inf beyond the horizon
    tk_s: NDArray[np.float64]
    responders_within: NDArray[np.int64]
    p_covered: NDArray[np.float64]  # street-length weighted mean
    street_m: NDArray[np.float64]
    gap: NDArray[np.bool_]


def _group_median(cells: CellIndex, values: NDArray[np.float32]) -> NDArray[np.float64]:
    # One sort of int64 keys (cell in the high word, the float32's bits below: for values
    # >= 0, inf included, the bits sort as the values), instead of a lexsort.
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    key = np.sort((cells.cell << 32) | bits)
    v = (key & 0xFFFFFFFF).astype(np.uint32).view(np.float32).astype(np.float64)
    start, counts = cells.indptr[:-1], np.diff(cells.indptr)
    out = np.full(len(cells.ids), np.inf)
    has = counts > 0
    lo = (start + (counts - 1) // 2)[has]
    hi = (start + counts // 2)[has]
    out[has] = (v[lo] + v[hi]) / 2
    return out


def cell_stats(
    cells: CellIndex,
    field: Field,
    p: NDArray[np.float64],
    street_m: NDArray[np.float64],
    *,
    k: int,
    threshold_s: float,
    target: float,
    times: Field | None = None,
    medians: bool = True,
) -> CellStats:
    """Aggregate a field to H3 cells: medians, distinct responders within, weighted p, gaps.

    A gap is a cell reached by fewer than ``k`` distinct responders within ``threshold_s``
    (at any of its nodes) or whose street-weighted ``p_covered`` is below ``target``.

    Parameters
    ----------
    cells
        Nodes grouped by cell.
    field
        Field on the same nodes (at least ``k`` labels).
    p
        p_covered per node.
    street_m
        Street length per node.
    k
        Responders wanted.
    threshold_s
        Arrival limit.
    target
        Smallest p_covered that is not a gap.
    times
        Field whose 1st and k-th times give the medians (e.g. searched farther than
        ``threshold_s``); default ``field``.
    medians
        False: leave ``t1_s``/``tk_s`` inf (the weekly profile only counts gaps).

    Returns
    -------
    The per-cell figures.
    """
    n_cells = len(cells.ids)
    c = cells.cell
    tf = field if times is None else times
    if medians:
        t1 = _group_median(cells, tf.times_s[:, 0])
        tk = _group_median(cells, tf.times_s[:, k - 1])
    else:
        t1 = tk = np.full(n_cells, np.inf)
    # float32 limit: the comparison numpy makes between the float32 times and a float
    responders: NDArray[np.int64] = _kernels.cell_responders_kernel(
        cells.order,
        cells.indptr,
        np.ascontiguousarray(field.times_s, dtype=np.float32),
        np.ascontiguousarray(field.sources, dtype=np.int64),
        np.float32(threshold_s),
        int(field.sources.max()) + 1 if field.sources.size else 1,
    )
    street = np.bincount(c, street_m, minlength=n_cells).astype(np.float64)
    weighted = np.bincount(c, street_m * p, minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        pc = np.where(street > 0, weighted / np.where(street > 0, street, 1), 0.0)
    gap = (responders < k) | (pc < target)
    return CellStats(t1, tk, responders, pc, street, gap)


@dataclass(frozen=True)
class HourSummary:
    """One hour of the weekly profile."""

    covered_share: float  # share of street length with k responders within the limit
    mean_p_covered: float  # street-length weighted
    gap_cells: int


def node_covered(field: Field, *, k: int, threshold_s: float) -> NDArray[np.bool_]:
    """Nodes reached by ``k`` distinct responders within ``threshold_s``."""
    out: NDArray[np.bool_] = field.times_s[:, k - 1] <= threshold_s
    return out


def summarise_hour(
    stats: CellStats,
    field: Field,
    p: NDArray[np.float64],
    street_m: NDArray[np.float64],
    *,
    k: int,
    threshold_s: float,
) -> HourSummary:
    """Street share covered, weighted mean p_covered and gap cell count of one field."""
    total = float(street_m.sum()) or 1.0
    covered = node_covered(field, k=k, threshold_s=threshold_s)
    return HourSummary(
        covered_share=float(street_m[covered].sum()) / total,
        mean_p_covered=float((street_m * p).sum()) / total,
        gap_cells=int(stats.gap.sum()),
    )


def reach_sets(
    graph: StreetGraph, nodes: ArrayLike, *, limit_s: float, chunk: int = 64
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Nodes each candidate site reaches within ``limit_s``: SciPy bounded Dijkstra, in chunks.

    Parameters
    ----------
    graph
        Graph the sites travel on.
    nodes
        Site nodes.
    limit_s
        Travel-time limit (mobilisation delay already subtracted).
    chunk
        Sites per SciPy call (bounds the dense result to ``chunk x n_nodes``).

    Returns
    -------
    CSR ``(indptr, indices)``: the nodes reached by site ``i`` are
    ``indices[indptr[i]:indptr[i+1]]``.
    """
    sites = np.asarray(nodes, dtype=np.int64).ravel()
    n = graph.n_nodes
    if limit_s < 0 or sites.size == 0:
        return np.zeros(sites.size + 1, dtype=np.int64), np.empty(0, dtype=np.int64)
    mat = csr_matrix(
        (graph.travel_time_s.astype(np.float64), graph.indices, graph.indptr), shape=(n, n)
    )
    counts: list[NDArray[np.int64]] = []
    found: list[NDArray[np.int64]] = []
    for lo in range(0, sites.size, chunk):
        part = sites[lo : lo + chunk]
        dist = dijkstra(mat, directed=True, indices=part, limit=limit_s + 1e-9)
        rows, cols = np.nonzero(np.isfinite(dist))
        counts.append(np.bincount(rows, minlength=part.size).astype(np.int64))
        found.append(cols.astype(np.int64))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return indptr, np.concatenate(found)


@dataclass(frozen=True)
class Recruitment:
    """Greedy picks: site numbers in pick order and each one's marginal gain."""

    picks: NDArray[np.int64]
    gain: NDArray[np.float64]  # weight units (e.g. street metre-hours)


def greedy_recruit(
    indptr: NDArray[np.int64],
    indices: NDArray[np.int64],
    deficit: NDArray[np.int64],
    weight: NDArray[np.float64],
    *,
    n: int,
) -> Recruitment:
    """Greedy maximal covering: repeatedly the site whose volunteer covers the most weight.

    ``deficit[h, x]`` responders are missing at node ``x`` in hour (class) ``h``; a new
    volunteer at site ``s`` adds one responder to every node it reaches, in every hour.
    A node-hour becomes covered when its deficit reaches 0, worth ``weight[h, x]``. Each pick
    takes the largest gain with the previous picks in place (deficits reduced), which for
    deficits of 1 (k = 1, or nodes one responder short) is the classic greedy for maximum
    coverage, within (1 - 1/e) of the optimum.

    Parameters
    ----------
    indptr, indices
        Reach sets of the sites (:func:`reach_sets`).
    deficit
        int ``(H, n_nodes)``, >= 0.
    weight
        float ``(H, n_nodes)``.
    n
        Sites wanted.

    Returns
    -------
    At most ``n`` picks with positive gain.
    """
    d = deficit.copy()
    n_sites = indptr.size - 1
    counts = np.diff(indptr)
    owner = np.repeat(np.arange(n_sites), counts)
    picks: list[int] = []
    gains: list[float] = []
    taken = np.zeros(n_sites, dtype=bool)
    for _ in range(n):
        value = (weight * (d == 1)).sum(axis=0)
        g = np.bincount(owner, value[indices], minlength=n_sites)
        g[taken] = -1.0
        if n_sites == 0:
            break
        best = int(np.argmax(g))
        if g[best] <= 0:
            break
        picks.append(best)
        gains.append(float(g[best]))
        taken[best] = True
        reached = indices[indptr[best] : indptr[best + 1]]
        d[:, reached] = np.maximum(d[:, reached] - 1, 0)
    return Recruitment(np.array(picks, dtype=np.int64), np.array(gains))


def cell_center(cell: str) -> tuple[float, float]:
    """(lon, lat) of an H3 cell's centre."""
    lat, lon = h3.cell_to_latlng(cell)
    return float(lon), float(lat)


@functools.lru_cache(maxsize=1 << 18)
def cell_polygon(cell: str) -> list[list[float]]:
    """The cell's boundary as a closed GeoJSON ring of [lon, lat] (counter-clockwise); memoised.

    The ring is shared between calls: callers copy it (pydantic does) and never mutate it.
    """
    ring = [[float(lon), float(lat)] for lat, lon in h3.cell_to_boundary(cell)]
    ring.append(ring[0])
    return ring


def coarser(cell: str, res: int) -> str:
    """The parent cell at a coarser resolution."""
    return str(h3.cell_to_parent(cell, res))


def round_minute_s(value: float) -> float | None:
    """Seconds rounded to the whole minute; None when infinite (beyond the horizon)."""
    if not math.isfinite(value):
        return None
    return float(round(value / 60.0) * 60)
