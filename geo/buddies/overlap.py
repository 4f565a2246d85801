"""Buddy similarity: shared street length x overlapping hours, plus home proximity, sparse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_matrix, csr_matrix

from geo.buddies.communities import DEFAULT_MAX_LINKS
from geo.buddies.match import Matching
from geo.graph import StreetGraph
from geo.route import k_nearest_field

# Home proximity weighs at most this much against a route similarity in [0, 1]: a tie-breaker.
HOME_WEIGHT = 0.05
HOME_NEIGHBOURS = 4
HOME_MAX_S = 600.0


# Links a member keeps in the similarity: ten times Leiden's (``DEFAULT_MAX_LINKS``), so that
# the merge and refine steps, which read all links, still see every plausible group-mate.
SIMILARITY_MAX_LINKS = 10 * DEFAULT_MAX_LINKS
# Route pairs (one per shared edge) one chunk's sparse product may walk: ~100 MB at most.
PAIR_BUDGET = 500_000
# Time bands of the inverted index (edge, band): routes meet only if their windows overlap.
BAND_S = 900.0


@dataclass(frozen=True)
class _RouteIndex:
    """Routes sorted by member with their incidence to street edges (the inverted index)."""

    n_members: int
    member: NDArray[np.int64]  # member per route, sorted
    route_ptr: NDArray[np.int64]  # routes of member m: route_ptr[m]:route_ptr[m + 1]
    mask: NDArray[np.int64]
    start: NDArray[np.float64]
    end: NDArray[np.float64]
    a: csr_matrix  # routes x edges: length + 1j * travel time of the edge
    self_score: NDArray[np.float64]  # per member: own metres x minutes a week

    @property
    def nnz(self) -> int:
        return int(self.a.nnz)

    @staticmethod
    def build(
        matching: Matching,
        route_member: ArrayLike,
        days: ArrayLike,
        start_s: ArrayLike,
        end_s: ArrayLike,
        n_members: int,
    ) -> _RouteIndex:
        member_of = np.asarray(route_member, dtype=np.int64)
        nr = matching.n_routes
        ok = np.ones(nr, dtype=bool)
        ok[list(matching.unmatched)] = False
        order = np.argsort(member_of, kind="stable")
        rank = np.empty(nr, dtype=np.int64)
        rank[order] = np.arange(nr)
        mask = np.asarray(days, dtype=np.int64)[order]
        start = np.asarray(start_s, dtype=np.float64)[order]
        end = np.asarray(end_s, dtype=np.float64)[order]
        member = member_of[order]
        whole_days, whole_hours = _overlap(mask, start, end, mask, start, end)
        self_score = np.bincount(
            member,
            weights=np.where(ok[order], matching.length_m[order] * whole_days * whole_hours, 0.0),
            minlength=n_members,
        ).astype(np.float64)
        if matching.edge_key.size:
            _, col = np.unique(matching.edge_key, return_inverse=True)
            data = matching.edge_length_m + 1j * matching.edge_time_s
            a = csr_matrix((data, (rank[matching.edge_route], col)), shape=(nr, int(col.max()) + 1))
        else:
            a = csr_matrix((nr, 0), dtype=np.complex128)
        return _RouteIndex(
            n_members=n_members,
            member=member,
            route_ptr=np.searchsorted(member, np.arange(n_members + 1)).astype(np.int64),
            mask=mask,
            start=start,
            end=end,
            a=a,
            self_score=self_score,
        )

    def pair_terms(
        self, i: NDArray[np.int64], j: NDArray[np.int64], shared: NDArray[np.complex128]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.complex128]]:
        """Member pairs of route pairs ``i, j`` (other members only, overlapping in time).

        ``shared`` is shared metres + 1j * shared seconds per route pair; the result holds
        metres x minutes a week + 1j * minutes a week together, per (repeated) member pair.
        """
        mi, mj = self.member[i], self.member[j]
        other = mi != mj
        i, j, mi, mj, shared = i[other], j[other], mi[other], mj[other], shared[other]
        n_days, hours = _overlap(
            self.mask[i], self.start[i], self.end[i], self.mask[j], self.start[j], self.end[j]
        )
        minutes = n_days * hours
        live = minutes > 0
        sm, ss = shared.real[live], shared.imag[live]
        n_days, hours, minutes = n_days[live], hours[live], minutes[live]
        # minutes a week both are on shared streets: the overlap, no longer than the walk
        together = n_days * np.minimum(hours, ss / 60.0)
        return mi[live], mj[live], sm * minutes + 1j * together

    def shared_within(self, groups: Sequence[Sequence[int]]) -> csr_matrix:
        """Exact member x member shared minutes, for pairs in the same group only.

        One sparse product on edge keys made distinct per group, so only routes of the same
        group meet: work and memory grow with the groups' own route pairs.
        """
        n = self.n_members
        label = np.full(n, -1, dtype=np.int64)
        for g, ms in enumerate(groups):
            label[np.asarray(ms, dtype=np.int64)] = g
        if not self.nnz or not (label >= 0).any():
            return csr_matrix((n, n))
        a = self.a.tocoo()
        lab = label[self.member[a.row]]
        keep = lab >= 0
        if not keep.any():
            return csr_matrix((n, n))
        n_edges = self.a.shape[1]
        # (group, edge) keys, numbered densely: columns only for the pairs that occur
        _, key = np.unique(lab[keep] * n_edges + a.col[keep], return_inverse=True)
        ag = csr_matrix(
            (a.data[keep], (a.row[keep], key.ravel())),
            shape=(self.a.shape[0], int(key.max()) + 1),
        )
        p = (ag @ (ag != 0).T.astype(np.float64)).tocoo()
        mi, mj, val = self.pair_terms(p.row.astype(np.int64), p.col.astype(np.int64), p.data)
        out = coo_matrix((val.imag, (mi, mj)), shape=(n, n)).tocsr()
        out.sum_duplicates()
        return out


@dataclass(frozen=True)
class Similarity:
    """Member-by-member sparse matrices (symmetric, zero diagonal)."""

    weight: csr_matrix  # normalised route overlap plus home proximity: the partition's input
    shared_minutes: csr_matrix  # minutes a week on shared streets at the same time (kept links)
    index: _RouteIndex | None = None

    def shared_within(self, groups: Sequence[Sequence[int]]) -> csr_matrix:
        """Exact shared minutes of every pair within the same group (any grouping)."""
        if self.index is None:
            return self.shared_minutes
        return self.index.shared_within(groups)


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
    max_links: int = SIMILARITY_MAX_LINKS,
    pair_budget: int = PAIR_BUDGET,
) -> Similarity:
    """Sparse member similarity from an inverted index edge -> routes, in bounded memory.

    Routes sharing an edge meet in the product ``A W Aᵀ`` of the route-by-edge incidence
    matrix ``A`` with the edge lengths ``W`` (scipy's sparse product walks each edge's
    routes: an inverted index). A route pair scores shared metres x the minutes a week its
    windows overlap (same weekday, overlapping hours), summed per member pair and
    normalised by ``sqrt(self_a * self_b)`` (cosine-like, at most 1) so that long commutes
    do not swamp short ones. Home proximity adds ``home_weight * (1 - t / home_max_s)`` for
    the ``home_neighbours`` nearest homes by travel time ``t``: a tie-breaker, and the only
    link of members without routes.

    On a small graph with many commuters nearly every pair shares an edge, so the product
    is computed for chunks of members at a time (each chunk's product has at most about
    ``pair_budget`` entries) and each member keeps only its ``max_links`` strongest links
    (and those naming it), with their exact weights: memory is
    O(members x max_links + pair_budget), never O(pairs). A group holds at most 10, so the
    dropped weak links cannot pull a member into one; where no member has more than
    ``max_links`` links the result is the full similarity. Exact shared minutes of any
    grouping (for the quality report) come from :meth:`Similarity.shared_within`.

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
    max_links
        Links kept per member (at least 1).
    pair_budget
        Route pairs (with repeats, one per shared edge) a chunk's product may walk.

    Returns
    -------
    The similarity matrices.
    """
    if max_links < 1 or pair_budget < 1:
        msg = f"max_links and pair_budget must be >= 1, got {max_links}, {pair_budget}"
        raise ValueError(msg)
    index = _RouteIndex.build(matching, route_member, days, start_s, end_s, n_members)
    weight = csr_matrix((n_members, n_members))
    shared = csr_matrix((n_members, n_members))
    if index.nnz:
        weight, shared = _top_links(index, max_links, pair_budget)
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
    return Similarity(weight=weight, shared_minutes=shared.tocsr(), index=index)


def _banded(index: _RouteIndex) -> tuple[csr_matrix, csr_matrix]:
    """Route x (edge, time band) incidences: ``S`` at the band a route starts in, ``C`` over
    every band its window touches (linear time over two days, as :func:`_overlap` counts).

    Two windows overlap only if the later one starts inside the earlier one, so the earlier
    covers the band the later starts in: ``S Cᵀ`` holds every route pair overlapping in time
    (with its shared metres and seconds, once per shared edge), and few others.
    """
    a = index.a.tocoo()
    end = np.where(index.end <= index.start, index.end + 86_400, index.end)
    b0 = np.floor(index.start / BAND_S).astype(np.int64)
    b1 = np.maximum(np.ceil(end / BAND_S).astype(np.int64) - 1, b0)
    n_bands = int(b1.max()) + 1 if b1.size else 1
    row = a.row.astype(np.int64)
    col = a.col.astype(np.int64)
    rep = (b1 - b0 + 1)[row]
    first = np.cumsum(rep) - rep
    crow = np.repeat(row, rep)
    step = np.arange(crow.size, dtype=np.int64) - np.repeat(first, rep)
    ckey = np.repeat(col, rep) * n_bands + b0[crow] + step
    keys, cidx = np.unique(ckey, return_inverse=True)
    sidx = np.searchsorted(keys, col * n_bands + b0[row])
    shape = (index.a.shape[0], keys.size)
    start_m = csr_matrix((a.data, (row, sidx)), shape=shape)
    cover = csr_matrix((np.ones(crow.size), (crow, cidx)), shape=shape)
    return start_m, cover


def _chunks(
    index: _RouteIndex, start_m: csr_matrix, cover: csr_matrix, budget: int
) -> list[tuple[int, int]]:
    """Member ranges whose routes' products walk at most ``budget`` route pairs each.

    A route walks, per (edge, band) it starts in, every route covering it, and per (edge,
    band) it covers, every route starting there; a member too busy for the budget alone is
    a chunk of its own.
    """
    n_cover = np.bincount(cover.indices, minlength=cover.shape[1]).astype(np.float64)
    n_start = np.bincount(start_m.indices, minlength=start_m.shape[1]).astype(np.float64)
    ones = csr_matrix((np.ones(start_m.nnz), start_m.indices, start_m.indptr), shape=start_m.shape)
    work = np.bincount(
        index.member, weights=ones @ n_cover + cover @ n_start, minlength=index.n_members
    )
    cum = np.cumsum(work)
    out: list[tuple[int, int]] = []
    lo = 0
    n = index.n_members
    while lo < n:
        before = cum[lo - 1] if lo else 0.0
        hi = max(int(np.searchsorted(cum, before + budget, side="right")), lo + 1)
        out.append((lo, min(hi, n)))
        lo = hi
    return out


def _later(index: _RouteIndex, x: NDArray[np.int64], y: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Route ``x`` starts after ``y`` (ties: the higher index): each pair counted once."""
    sx, sy = index.start[x], index.start[y]
    return np.asarray((sx > sy) | ((sx == sy) & (x > y)), dtype=np.bool_)


def _top_links(index: _RouteIndex, k: int, budget: int) -> tuple[csr_matrix, csr_matrix]:
    """Normalised overlap and shared minutes, each member's ``k`` strongest links kept.

    Chunk by chunk of members: the route pairs of the chunk's routes overlapping in time
    (the chunk's route starting later, from ``S Cᵀ``; starting earlier, from ``C Sᵀ``),
    member pairs summed, normalised, cut to the ``k`` strongest per member; then
    symmetrised (the values are symmetric, so a link kept by either side keeps its exact
    weight).
    """
    n = index.n_members
    start_m, cover = _banded(index)
    cover_t = cover.T.tocsr()
    start_t = start_m.T.tocsr()
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    wts: list[NDArray[np.float64]] = []
    mins: list[NDArray[np.float64]] = []
    for lo, hi in _chunks(index, start_m, cover, budget):
        r0, r1 = int(index.route_ptr[lo]), int(index.route_ptr[hi])
        if r0 == r1:
            continue
        late = (start_m[r0:r1] @ cover_t).tocoo()
        x, y = late.row.astype(np.int64) + r0, late.col.astype(np.int64)
        ok = _later(index, x, y)
        early = (cover[r0:r1] @ start_t).tocoo()
        ey, ex = early.row.astype(np.int64) + r0, early.col.astype(np.int64)
        eok = _later(index, ex, ey)
        i = np.concatenate([x[ok], ey[eok]])
        j = np.concatenate([y[ok], ex[eok]])
        shared = np.concatenate([late.data[ok], early.data[eok]])
        del late, early, x, y, ex, ey
        mi, mj, val = index.pair_terms(i, j, shared)
        m = coo_matrix((val, (mi - lo, mj)), shape=(hi - lo, n)).tocsr()
        m.sum_duplicates()
        c = m.tocoo()
        row = c.row.astype(np.int64) + lo
        col = c.col.astype(np.int64)
        norm = np.sqrt(index.self_score[row] * index.self_score[col])
        w = np.where(norm > 0, c.data.real / np.where(norm > 0, norm, 1), 0.0)
        order = np.lexsort((col, -w, row))
        row, col, w, together = row[order], col[order], w[order], c.data.imag[order]
        first = np.searchsorted(row, row, side="left")
        keep = (np.arange(row.size) - first) < k
        rows.append(row[keep])
        cols.append(col[keep])
        wts.append(w[keep])
        mins.append(together[keep])
    if not rows:
        return csr_matrix((n, n)), csr_matrix((n, n))
    r, c2 = np.concatenate(rows), np.concatenate(cols)
    weight = csr_matrix((np.concatenate(wts), (r, c2)), shape=(n, n))
    shared_m = csr_matrix((np.concatenate(mins), (r, c2)), shape=(n, n))
    return weight.maximum(weight.T).tocsr(), shared_m.maximum(shared_m.T).tocsr()


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
