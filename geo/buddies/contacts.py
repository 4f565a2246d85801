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
