"""Buddy partition: capped communities of the similarity graph, small ones merged."""

from __future__ import annotations

from collections.abc import Sequence

import igraph as ig
import leidenalg
import numpy as np
from scipy.sparse import csr_matrix

HARD_MAX_SIZE = 10
DEFAULT_MAX_SIZE = 10
DEFAULT_MIN_SIZE = 3
DEFAULT_RESOLUTION = 0.1
DEFAULT_MAX_LINKS = 20


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
