"""Point contacts: a min-cost assignment of defence members to buddy groups, capped."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment

from geo.graph import StreetGraph
from geo.route import k_nearest_field

DEFAULT_MAX_GROUPS_PER_CONTACT = 3
DEFAULT_CONTACT_MAX_ETA_S = 900.0


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
    time_s = np.asarray(times, dtype=np.float64)
    source_of = np.asarray(sources, dtype=np.int64)
    group, source, mean = _mean_times(group_nodes, time_s, source_of, dnode.size, max_eta_s * 2)
    near = mean <= max_eta_s
    group, source, mean = group[near], source[near], mean[near]
    contact: list[int | None] = [None] * ng
    eta: list[float | None] = [None] * ng
    if not source.size:
        return contact, eta
    cols, col = np.unique(source, return_inverse=True)
    big = max_eta_s * 1e3
    mat = np.full((ng, cols.size), big)
    mat[group, col] = mean
    rep = np.repeat(mat, max_groups_per_contact, axis=1)
    r, c = linear_sum_assignment(rep)
    for gi, cj in zip(r, c, strict=True):
        if rep[gi, cj] < big:
            contact[int(gi)] = int(cols[cj // max_groups_per_contact])
            eta[int(gi)] = float(rep[gi, cj])
    return contact, eta


def _mean_times(
    group_nodes: Sequence[NDArray[np.int64]],
    times: NDArray[np.float64],
    sources: NDArray[np.int64],
    n_sources: int,
    unreached_s: float,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Mean travel time of each (group, defence member) pair the k-nearest field links.

    Positions the defence member does not reach count at ``unreached_s`` (the search limit).
    Returns group, defence member and mean per pair, in (group, member) order.
    """
    arrays = [np.asarray(nodes, dtype=np.int64) for nodes in group_nodes]
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    t = times[flat]
    s = sources[flat]
    ok = (s >= 0) & np.isfinite(t)
    owner = np.broadcast_to(np.repeat(np.arange(sizes.size), sizes)[:, None], t.shape)[ok]
    pair, at = np.unique(owner * n_sources + s[ok], return_inverse=True)
    total = np.bincount(at, weights=t[ok], minlength=pair.size)
    reached = np.bincount(at, minlength=pair.size)
    group = pair // n_sources
    mean = (total + (sizes[group] - reached) * unreached_s) / sizes[group]
    return group, pair % n_sources, mean
