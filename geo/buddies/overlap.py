"""Buddy similarity: shared street length x overlapping hours, plus home proximity, sparse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_matrix, csr_matrix

from geo.buddies.match import Matching
from geo.graph import StreetGraph
from geo.route import k_nearest_field

# Home proximity weighs at most this much against a route similarity in [0, 1]: a tie-breaker.
HOME_WEIGHT = 0.05
HOME_NEIGHBOURS = 4
HOME_MAX_S = 600.0


@dataclass(frozen=True)
class Similarity:
    """Member-by-member sparse matrices (symmetric, zero diagonal)."""

    weight: csr_matrix  # normalised route overlap plus home proximity: the partition's input
    shared_minutes: csr_matrix  # minutes a week on shared streets at the same time


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
