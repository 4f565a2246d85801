"""Member ETAs to an alert: bounded network search per mode, straight-line fallback, merge.

ETA of a member = ``offset_s`` (mobilisation delay and the final approach from the target
node to the alert point, the same for every member of a mode) + ``factor * travel_time``
from the member's best active anchor + the anchor's own offset. On a street graph the
travel times come from one bounded reverse Dijkstra from the alert's node
(:func:`geo.route.nearest_members`); without a graph they are the great-circle distance
at the mode's speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.graph import StreetGraph
from geo.route import AnchorIndex, nearest_members

EARTH_RADIUS_M = 6_371_008.8


def haversine_m(
    lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike
) -> NDArray[np.float64]:
    """Great-circle distance in metres on the mean Earth sphere (haversine formula).

    Parameters
    ----------
    lon1, lat1, lon2, lat2
        Degrees; broadcast against each other.

    Returns
    -------
    Distances in metres.
    """
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def _empty() -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)


def rank_on_graph(
    graph: StreetGraph,
    target_node: int,
    anchors: AnchorIndex,
    *,
    k: int | None,
    max_eta_s: float,
    offset_s: float = 0.0,
    skip: ArrayLike | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The ``k`` members soonest at a target: one bounded reverse Dijkstra, minus skipped ids.

    Asks :func:`geo.route.nearest_members` for ``k + len(skip)`` members, so that after the
    skipped ones (excluded members, members placed by a live location instead) are
    dropped the ``k`` best others remain; the search stays a single bounded search.

    Parameters
    ----------
    graph
        Graph of the mode.
    target_node
        The alert's node.
    anchors
        Anchor index of the mode's members (member ids are the caller's numbers).
    k
        Members wanted; None for everyone within ``max_eta_s``.
    max_eta_s
        Largest ETA returned (``offset_s`` included).
    offset_s
        Seconds added to every ETA (mobilisation, final approach).
    skip
        Member ids to leave out.

    Returns
    -------
    member ids and ETAs, ascending.
    """
    budget_s = max_eta_s - offset_s
    if budget_s < 0 or anchors.n_anchors == 0:
        return _empty()
    skip_a = np.asarray([] if skip is None else skip, dtype=np.int64).ravel()
    k_search = None if k is None else min(k + int(skip_a.size), anchors.n_members)
    members, travel_s = nearest_members(graph, target_node, anchors, k=k_search, max_eta_s=budget_s)
    if skip_a.size:
        keep = ~np.isin(members, skip_a)
        members, travel_s = members[keep], travel_s[keep]
    if k is not None:
        members, travel_s = members[:k], travel_s[:k]
    return members, travel_s + offset_s


def rank_straight_line(
    member: ArrayLike,
    lon: ArrayLike,
    lat: ArrayLike,
    *,
    target_lon: float,
    target_lat: float,
    speed_mps: ArrayLike,
    k: int | None,
    max_eta_s: float,
    offset_s: float = 0.0,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Fallback ranking without a graph: great-circle distance at each anchor's speed.

    ETA per anchor = ``offset_s + haversine(anchor, target) / speed_mps``; each member
    counts once, at its best anchor (sort by member then ETA, keep the first).

    Parameters
    ----------
    member
        Member id per anchor.
    lon, lat
        Anchor coordinates.
    target_lon, target_lat
        The alert point.
    speed_mps
        Speed per anchor (or one scalar), > 0.
    k
        Members wanted; None for all within ``max_eta_s``.
    max_eta_s
        Largest ETA returned.
    offset_s
        Seconds added to every ETA.

    Returns
    -------
    member ids and ETAs, ascending.
    """
    member_a = np.asarray(member, dtype=np.int64).ravel()
    if member_a.size == 0:
        return _empty()
    dist = haversine_m(lon, lat, target_lon, target_lat)
    eta = offset_s + dist / np.asarray(speed_mps, dtype=np.float64)
    order = np.lexsort((eta, member_a))
    m_sorted = member_a[order]
    first = np.ones(m_sorted.size, dtype=np.bool_)
    first[1:] = m_sorted[1:] != m_sorted[:-1]
    members = m_sorted[first]
    best = eta[order][first]
    by_eta = np.argsort(best, kind="stable")
    members, best = members[by_eta], best[by_eta]
    within = best <= max_eta_s
    members, best = members[within], best[within]
    if k is not None:
        members, best = members[:k], best[:k]
    return members, np.asarray(best, dtype=np.float64)


def merge_rankings(
    parts: Sequence[tuple[ArrayLike, ArrayLike]], *, limit: int | None
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Merge per-mode rankings by ETA: concatenate, stable sort, one entry per member.

    Parameters
    ----------
    parts
        ``(member ids, etas)`` per part (e.g. per mode).
    limit
        Entries kept; None for all.

    Returns
    -------
    member ids, ETAs and the index of the part each came from, ascending by ETA.
    """
    if not parts:
        m, e = _empty()
        return m, e, np.empty(0, dtype=np.int64)
    members = np.concatenate([np.asarray(p[0], dtype=np.int64).ravel() for p in parts])
    etas = np.concatenate([np.asarray(p[1], dtype=np.float64).ravel() for p in parts])
    part = np.concatenate(
        [np.full(np.asarray(p[0]).size, i, dtype=np.int64) for i, p in enumerate(parts)]
    )
    order = np.argsort(etas, kind="stable")
    members, etas, part = members[order], etas[order], part[order]
    _, first = np.unique(members, return_index=True)
    if first.size != members.size:
        keep = np.sort(first)
        members, etas, part = members[keep], etas[keep], part[keep]
    if limit is not None:
        members, etas, part = members[:limit], etas[:limit], part[:limit]
    return members, etas, part


def speed_factor(
    mode_speed_mps: float, member_speed_mps: ArrayLike, *, lo: float = 0.25, hi: float = 4.0
) -> NDArray[np.float64]:
    """Travel-time multiplier of members with their own speed: ``mode_speed / member_speed``.

    Missing (NaN) or non-positive speeds give 1. The factor is clipped to ``[lo, hi]`` so
    that a typo cannot make someone four times faster than the graph assumes.

    Parameters
    ----------
    mode_speed_mps
        Speed the graph's travel times assume.
    member_speed_mps
        Member speeds, NaN where unset.
    lo, hi
        Clip bounds.

    Returns
    -------
    Factor per member.
    """
    speed = np.asarray(member_speed_mps, dtype=np.float64)
    valid = np.isfinite(speed) & (speed > 0)
    factor = np.ones(speed.shape)
    if math.isfinite(mode_speed_mps) and mode_speed_mps > 0:
        factor[valid] = mode_speed_mps / speed[valid]
    return np.clip(factor, lo, hi)
