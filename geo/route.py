"""Bounded travel-time search to a target over member anchors, and multi-source k-nearest fields."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo import _kernels
from geo.graph import StreetGraph

Direction = Literal["from_sources", "to_sources"]


@dataclass(frozen=True, eq=False)
class AnchorIndex:
    """Anchors grouped by graph node (CSR): where each member may start travelling from.

    An anchor is ``(member, node, offset_s >= 0, factor > 0)``; the member's ETA via the
    anchor is ``factor * travel_time(node -> target) + offset_s``. A member may have many
    anchors (a route's nodes, a zone's node) and counts once, at its best one.
    """

    n_nodes: int
    indptr: NDArray[np.int64]  # node -> anchors[indptr[v]:indptr[v+1]]
    member: NDArray[np.int32]  # dense member number per anchor, sorted by node
    offset_s: NDArray[np.float64]
    factor: NDArray[np.float64]
    member_ids: NDArray[np.int64]  # dense number -> member id
    min_factor: float
    min_offset_s: float
    # scratch arrays per concurrent query; never compared
    _pool: SimpleQueue[Any] = field(default_factory=SimpleQueue, init=False, repr=False)

    @property
    def n_anchors(self) -> int:
        """Number of anchors."""
        return int(self.member.shape[0])

    @property
    def n_members(self) -> int:
        """Number of distinct members."""
        return int(self.member_ids.shape[0])

    @classmethod
    def build(
        cls,
        n_nodes: int,
        member: ArrayLike,
        node: ArrayLike,
        offset_s: ArrayLike | None = None,
        factor: ArrayLike | None = None,
    ) -> AnchorIndex:
        """Group anchors by node.

        Parameters
        ----------
        n_nodes
            Node count of the graph the anchors belong to.
        member
            Member id per anchor (any int64 ids; repeated for a member's several anchors).
        node
            Graph node per anchor.
        offset_s
            Seconds added to the travel time (mobilisation delay, snap distance); default 0.
        factor
            Multiplier of the travel time (> 0); default 1.

        Returns
        -------
        The index.
        """
        member_a = np.asarray(member, dtype=np.int64).ravel()
        node_a = np.asarray(node, dtype=np.int64).ravel()
        a = len(member_a)
        if len(node_a) != a:
            msg = f"member and node lengths differ: {a} != {len(node_a)}"
            raise ValueError(msg)
        off = np.zeros(a) if offset_s is None else np.asarray(offset_s, dtype=np.float64).ravel()
        fac = np.ones(a) if factor is None else np.asarray(factor, dtype=np.float64).ravel()
        if len(off) != a or len(fac) != a:
            msg = "offset_s and factor must have one value per anchor"
            raise ValueError(msg)
        if a and (node_a.min() < 0 or node_a.max() >= n_nodes):
            msg = f"anchor nodes must lie in [0, {n_nodes})"
            raise ValueError(msg)
        if not (np.isfinite(off).all() and (off >= 0).all()):
            msg = "offset_s must be finite and >= 0"
            raise ValueError(msg)
        if not (np.isfinite(fac).all() and (fac > 0).all()):
            msg = "factor must be finite and > 0"
            raise ValueError(msg)
        member_ids, dense = np.unique(member_a, return_inverse=True)
        order = np.argsort(node_a, kind="stable")
        indptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(node_a, minlength=n_nodes), out=indptr[1:])
        return cls(
            n_nodes=int(n_nodes),
            indptr=indptr,
            member=dense[order].astype(np.int32),
            offset_s=np.ascontiguousarray(off[order]),
            factor=np.ascontiguousarray(fac[order]),
            member_ids=member_ids.astype(np.int64),
            min_factor=float(fac.min()) if a else 1.0,
            min_offset_s=float(off.min()) if a else 0.0,
        )

    def _take_scratch(self) -> tuple[NDArray[Any], ...]:
        try:
            return self._pool.get_nowait()  # type: ignore[no-any-return]
        except Empty:
            m = self.n_members
            return (
                np.full(m, np.inf),  # best eta per member
                np.zeros(m, dtype=np.uint8),  # final
                np.empty(m, dtype=np.int32),  # touched members
                np.empty(self.n_anchors + 1),  # pending heap keys
                np.empty(self.n_anchors + 1, dtype=np.int32),  # pending heap members
                np.empty(m, dtype=np.int32),  # out members
                np.empty(m),  # out etas
            )


def _graph_scratch(graph: StreetGraph) -> tuple[SimpleQueue[Any], tuple[NDArray[Any], ...]]:
    pool: SimpleQueue[Any] = graph._cache.setdefault("route_pool", SimpleQueue())
    try:
        return pool, pool.get_nowait()
    except Empty:
        n, m = graph.n_nodes, graph.n_edges
        return pool, (
            np.full(n, np.inf),  # dist
            np.zeros(n, dtype=np.uint8),  # settled
            np.empty(n, dtype=np.int32),  # touched nodes
            np.empty(m + 1),  # heap keys
            np.empty(m + 1, dtype=np.int32),  # heap nodes
        )


def nearest_members(
    graph: StreetGraph,
    target_node: int,
    anchors: AnchorIndex,
    *,
    k: int | None,
    max_eta_s: float,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Members who can reach a target soonest: bounded Dijkstra on the reversed graph.

    One numba-compiled Dijkstra on the reversed CSR from ``target_node`` gives each node's
    travel time to the target in ascending order; a node's anchors turn it into member
    ETAs. The search stops when ``k`` distinct members are final, i.e. the k-th best ETA
    is at most ``min_factor * frontier + min_offset_s`` (a lower bound of every ETA still
    unseen), or when that bound exceeds ``max_eta_s``. Scratch arrays are reused between
    calls (one set per concurrent caller) and reset through touched lists, so a query
    costs what it explores, not the graph size.

    Parameters
    ----------
    graph
        Compiled graph.
    target_node
        Node to reach.
    anchors
        Anchor index built for this graph.
    k
        Number of members wanted; None for all within ``max_eta_s``.
    max_eta_s
        Largest ETA returned.

    Returns
    -------
    member ids and their ETAs in seconds, ascending by ETA (ties in any order); each
    member once, at its best anchor.
    """
    if anchors.n_nodes != graph.n_nodes:
        msg = f"anchor index is for {anchors.n_nodes} nodes, graph has {graph.n_nodes}"
        raise ValueError(msg)
    target = int(target_node)
    if not 0 <= target < graph.n_nodes:
        msg = f"target node {target_node} outside [0, {graph.n_nodes})"
        raise ValueError(msg)
    if k is not None and k < 1:
        msg = f"k must be >= 1 or None, got {k}"
        raise ValueError(msg)
    if math.isnan(max_eta_s) or max_eta_s < 0:
        msg = f"max_eta_s must be >= 0, got {max_eta_s}"
        raise ValueError(msg)
    if anchors.n_anchors == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    pool, (dist, settled, touched, hk, hv) = _graph_scratch(graph)
    mscratch = anchors._take_scratch()
    best, final, mtouched, pk, pm, out_m, out_e = mscratch
    try:
        n_out = _kernels.nearest_members_kernel(
            graph.rev_indptr,
            graph.rev_indices,
            graph.rev_travel_time_s,
            target,
            anchors.indptr,
            anchors.member,
            anchors.offset_s,
            anchors.factor,
            anchors.min_factor,
            anchors.min_offset_s,
            -1 if k is None else int(k),
            float(max_eta_s),
            dist,
            settled,
            touched,
            hk,
            hv,
            best,
            final,
            mtouched,
            pk,
            pm,
            out_m,
            out_e,
        )
        members = anchors.member_ids[out_m[:n_out]]
        etas = out_e[:n_out].copy()
    finally:
        pool.put((dist, settled, touched, hk, hv))
        anchors._pool.put(mscratch)
    return members, etas


def k_nearest_field(
    graph: StreetGraph,
    source_nodes: ArrayLike,
    source_ids: ArrayLike,
    *,
    k: int,
    max_time_s: float = math.inf,
    direction: Direction = "from_sources",
    offset_s: ArrayLike | None = None,
    return_sources: bool = False,
    far_k: int | None = None,
    near_time_s: float = math.inf,
) -> NDArray[np.float32] | tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Per node, travel times of the 1st..k-th nearest distinct sources: multi-label Dijkstra.

    A label-setting Dijkstra from all sources at once keeps up to ``k`` labels per node,
    each from a different source id (a source id may sit on several nodes, e.g. a
    responder's anchors); labels settle in ascending time, so each node's labels are its
    ``k`` nearest distinct sources.

    With ``far_k``, labels later than ``near_time_s`` are kept only up to ``far_k`` per
    node: one search gives many labels near and a few far (coverage wants every responder
    within the limit and the k-th nearest farther out). The cap never grows with time, so
    the labels kept are still exact: a node refused a label already holds ``cap`` better
    ones from distinct sources, which reach its neighbours no later.

    Parameters
    ----------
    graph
        Compiled graph.
    source_nodes
        Node per source anchor.
    source_ids
        Source id per anchor (repeat an id for several anchors of one source).
    k
        Labels per node (>= 1).
    max_time_s
        Times above this are not searched (left inf).
    direction
        ``"from_sources"`` (default): ``times[x, j]`` is the travel time from the j-th
        nearest source *to* node x (responders travelling to x, for coverage).
        ``"to_sources"``: travel time from node x to the source.
    offset_s
        Seconds added per anchor (e.g. mobilisation delay); default 0.
    return_sources
        Also return the source id of each label.
    far_k
        Labels per node beyond ``near_time_s`` (1 <= far_k <= k); default ``k``.
    near_time_s
        Time up to which ``k`` labels are kept (with ``far_k``).

    Returns
    -------
    times
        float32 ``(n_nodes, k)``, ascending per row, inf where fewer than ``k`` sources
        reach the node within ``max_time_s`` (with ``far_k``: columns ``far_k`` and
        later hold only times up to ``near_time_s``).
    sources
        With ``return_sources``: int64 ``(n_nodes, k)`` source ids, -1 where none.
    """
    if k < 1:
        msg = f"k must be >= 1, got {k}"
        raise ValueError(msg)
    kf = k if far_k is None else int(far_k)
    if not 1 <= kf <= k:
        msg = f"far_k must lie in [1, k={k}], got {far_k}"
        raise ValueError(msg)
    if math.isnan(near_time_s):
        msg = "near_time_s must be a number"
        raise ValueError(msg)
    if direction not in ("from_sources", "to_sources"):
        msg = f"direction must be 'from_sources' or 'to_sources', got {direction!r}"
        raise ValueError(msg)
    nodes = np.asarray(source_nodes, dtype=np.int64).ravel()
    ids = np.asarray(source_ids, dtype=np.int64).ravel()
    if len(nodes) != len(ids):
        msg = f"source_nodes and source_ids lengths differ: {len(nodes)} != {len(ids)}"
        raise ValueError(msg)
    if len(nodes) and (nodes.min() < 0 or nodes.max() >= graph.n_nodes):
        msg = f"source nodes must lie in [0, {graph.n_nodes})"
        raise ValueError(msg)
    off = np.zeros(len(nodes)) if offset_s is None else np.asarray(offset_s, np.float64).ravel()
    if len(off) != len(nodes) or not (np.isfinite(off).all() and (off >= 0).all()):
        msg = "offset_s must hold one finite value >= 0 per source"
        raise ValueError(msg)
    unique_ids, dense = np.unique(ids, return_inverse=True)
    if direction == "from_sources":
        csr = (graph.indptr, graph.indices, graph.travel_time_s)
    else:
        csr = (graph.rev_indptr, graph.rev_indices, graph.rev_travel_time_s)
    n = graph.n_nodes
    times = np.full((n, k), np.inf, dtype=np.float32)
    labels = np.full((n, k), -1, dtype=np.int64)
    count = np.zeros(n, dtype=np.int32)
    if len(nodes):
        _kernels.k_nearest_kernel(
            *csr,
            nodes.astype(np.int32),
            dense.astype(np.int64),
            off,
            int(k),
            float(max_time_s),
            times,
            labels,
            count,
            kf,
            float(near_time_s) if kf < k else math.inf,
        )
    if not return_sources:
        return times
    sources = np.where(labels >= 0, unique_ids[np.maximum(labels, 0)], -1) if len(ids) else labels
    return times, sources.astype(np.int64)
