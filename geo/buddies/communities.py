"""Buddy partition: capped communities of the similarity graph, small ones merged."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import igraph as ig
import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix, csr_matrix

from geo.buddies._kernels import merge_small_kernel, refine_kernel

HARD_MAX_SIZE = 10
DEFAULT_MAX_SIZE = 10
DEFAULT_MIN_SIZE = 3
DEFAULT_RESOLUTION = 0.1
DEFAULT_MAX_LINKS = 20
DEFAULT_N_ITERATIONS = 2
# merge rounds before small groups are dissolved member by member
MERGE_PASSES = 3
# resolution doublings before an oversized community is cut into chunks instead
SPLIT_ROUNDS = 12
# sweeps of single-member moves after merging (each move raises the weight inside groups)
REFINE_SWEEPS = 10
_RNG_LOCK = threading.Lock()


def partition(
    weight: csr_matrix,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    min_size: int = DEFAULT_MIN_SIZE,
    keep: Sequence[Sequence[int]] = (),
    seed: int = 0,
    resolution: float = DEFAULT_RESOLUTION,
    max_links: int = DEFAULT_MAX_LINKS,
    n_iterations: int = DEFAULT_N_ITERATIONS,
) -> tuple[list[list[int]], list[int]]:
    """Leiden communities (CPM), oversized ones split, small ones merged by best overlap.

    Leiden (igraph's C implementation, constant Potts model) on the weighted similarity
    graph, seeded for determinism. Groups of ``keep`` stay together, for the members still
    linked to another member of their old group, so that a rebuild only places the rest:
    each is one vertex weighing its size (CPM with vertex weights is the same objective as
    on its members), so Leiden can add members to it but never cut it. A community above
    ``max_size`` or holding two kept groups is split by Leiden on its own links at twice
    the resolution, repeatedly. Communities below ``min_size`` then join the group they
    overlap most that has room (:func:`geo.buddies._kernels.merge_small_kernel`), and
    single members move to the group they link to more than their own where it has room
    and theirs keeps ``min_size`` (kept groups' members stay); members linked to no one
    are unplaced.

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
    n_iterations
        Leiden iterations (each one a full pass of moves, refinement and aggregation).

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
    wcsr = weight.tocsr()
    n = wcsr.shape[0]
    top = _strongest_links(wcsr, max_links).tocoo()
    linked = np.zeros(n, dtype=bool)
    linked[top.row] = True
    unit = _kept_units(wcsr, keep, max_size)
    n_units = int(unit.max()) + 1 if n else 0
    unit_size = np.bincount(unit, minlength=n_units)
    ur, uc = unit[top.row], unit[top.col]
    upper = ur < uc
    links = coo_matrix((top.data[upper], (ur[upper], uc[upper])), shape=(n_units, n_units))
    links = links.tocsr()
    links.sum_duplicates()
    links = links.tocoo()
    g = ig.Graph(n=n_units, edges=np.column_stack([links.row, links.col]))
    g.es["weight"] = links.data
    g.vs["size"] = unit_size
    with _seeded(seed):
        community = _leiden(g, resolution, n_iterations)
        community = _split_oversized(
            g, community, (unit_size > 1).astype(np.int64), max_size, resolution, n_iterations
        )
    label = np.where(linked, community[unit], -1)
    _, label[linked] = np.unique(label[linked], return_inverse=True)
    n_groups = int(label.max()) + 1 if linked.any() else 0
    label = merge_small_kernel(
        wcsr.indptr.astype(np.int64),
        wcsr.indices.astype(np.int64),
        wcsr.data.astype(np.float64),
        label.astype(np.int64),
        n_groups,
        max_size,
        min_size,
        MERGE_PASSES,
    )
    label = refine_kernel(
        wcsr.indptr.astype(np.int64),
        wcsr.indices.astype(np.int64),
        wcsr.data.astype(np.float64),
        label,
        unit_size[unit] > 1,
        n_groups,
        max_size,
        min_size,
        REFINE_SWEEPS,
    )
    return _groups_of(label)


def _kept_units(
    weight: csr_matrix, keep: Sequence[Sequence[int]], max_size: int
) -> NDArray[np.int64]:
    """Unit per member (``0..n_units-1``): one per kept group still linked, else one each."""
    n = weight.shape[0]
    unit = np.arange(n, dtype=np.int64)
    for k, old in enumerate(keep):
        old_a = np.array([m for m in old if 0 <= m < n], dtype=np.int64)[:max_size]
        if old_a.size < 2:
            continue
        sub = weight[old_a][:, old_a]
        still = np.asarray((sub > 0).sum(axis=1)).ravel() > 0
        stay = old_a[still]
        if stay.size >= 2:
            unit[stay] = n + k
    _, unit = np.unique(unit, return_inverse=True)
    return unit.astype(np.int64)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """igraph draws from one process-wide generator: a seeded one for the block, then back."""
    with _RNG_LOCK:
        ig.set_random_number_generator(random.Random(seed))
        try:
            yield
        finally:
            ig.set_random_number_generator(random)


def _leiden(g: ig.Graph, resolution: float, n_iterations: int) -> NDArray[np.int64]:
    """Leiden (CPM, vertex weights ``size``, edge weights ``weight``): community per vertex."""
    # CPM, not modularity: no resolution limit, so small tight groups form on a big graph;
    # a member joins a community only when its mean link to it exceeds the resolution
    found = g.community_leiden(
        objective_function="CPM",
        weights="weight",
        node_weights="size",
        resolution=resolution,
        n_iterations=n_iterations,
    )
    return np.asarray(found.membership, dtype=np.int64)


def _split_oversized(
    g: ig.Graph,
    community: NDArray[np.int64],
    kept: NDArray[np.int64],
    max_size: int,
    resolution: float,
    n_iterations: int,
) -> NDArray[np.int64]:
    """Re-run Leiden inside every community above ``max_size`` or holding two kept units.

    Each such community is split on its own links at twice the resolution, and again
    until every part fits; past :data:`SPLIT_ROUNDS` doublings a part is cut into
    consecutive chunks of units.
    """
    size = np.asarray(g.vs["size"], dtype=np.int64)
    out = community.copy()
    nxt = int(out.max()) + 1 if out.size else 0
    todo = [(np.flatnonzero(out == c), resolution, 0) for c in _too_big(out, size, kept, max_size)]
    while todo:
        units, res, depth = todo.pop()
        if depth >= SPLIT_ROUNDS:
            parts = _chunks(units, size, max_size)
        else:
            sub = _leiden(g.induced_subgraph(units.tolist()), 2 * res, n_iterations)
            parts = [units[sub == c] for c in range(int(sub.max()) + 1)]
        for part in parts:
            out[part] = nxt
            nxt += 1
            if size[part].sum() > max_size or kept[part].sum() > 1:
                todo.append((part, 2 * res, depth + 1))
    return out


def _too_big(
    community: NDArray[np.int64], size: NDArray[np.int64], kept: NDArray[np.int64], max_size: int
) -> list[int]:
    """Communities above the cap or holding more than one kept group."""
    members = np.bincount(community, weights=size)
    kept_n = np.bincount(community, weights=kept)
    return np.flatnonzero((members > max_size) | (kept_n > 1)).tolist()


def _chunks(
    units: NDArray[np.int64], size: NDArray[np.int64], max_size: int
) -> list[NDArray[np.int64]]:
    """Units packed in order into parts of at most ``max_size`` members (each unit fits)."""
    parts: list[list[int]] = [[]]
    filled = 0
    for u in units.tolist():
        if filled + size[u] > max_size and parts[-1]:
            parts.append([])
            filled = 0
        parts[-1].append(u)
        filled += int(size[u])
    return [np.asarray(p, dtype=np.int64) for p in parts]


def _groups_of(label: NDArray[np.int64]) -> tuple[list[list[int]], list[int]]:
    """Groups of two or more from a label per member (-1: none), and the other members."""
    counts = np.bincount(label[label >= 0]) if (label >= 0).any() else np.zeros(0, np.int64)
    placed = label >= 0
    placed[placed] = counts[label[placed]] >= 2
    members = np.flatnonzero(placed)
    lab = label[members]
    order = np.lexsort((members, lab))
    members, lab = members[order], lab[order]
    parts = np.split(members, np.flatnonzero(np.diff(lab)) + 1) if members.size else []
    parts.sort(key=lambda p: int(p[0]))
    return [p.tolist() for p in parts], np.flatnonzero(~placed).tolist()


def _strongest_links(weight: csr_matrix, k: int) -> csr_matrix:
    """Keep each row's ``k`` largest entries, then symmetrise by the maximum."""
    w = weight.tocoo()
    order = np.lexsort((-w.data, w.row))
    row, col, data = w.row[order], w.col[order], w.data[order]
    starts = np.searchsorted(row, row, side="left")
    keep = (np.arange(row.size) - starts) < k
    top = csr_matrix((data[keep], (row[keep], col[keep])), shape=weight.shape)
    return top.maximum(top.T).tocsr()
