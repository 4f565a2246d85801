"""Where members probably are at a time: weekly windows, quiet hours and active anchor nodes.

A member is placed by *anchors*: graph nodes (and their lon/lat) they may start travelling
from. Every anchor has a kind, in priority order

    LIVE (0) < ROUTE (1) < ZONE (2) < HOME (3)

and, for routes and zones, a weekly window ``(days_mask, start_s, end_s)`` in local time.
At a local time ``t`` a member's *active* anchors are the anchors of the best kind that has
at least one anchor active at ``t`` (home anchors are always active): all nodes of every
route whose window contains ``t`` ("nearest point of their route"), else the nodes of the
active scheduled zones, else the home zone's representative node. Live locations are
per-request anchors added by the caller and win over everything else.

Windows
-------
``days_mask`` has bit ``d`` set for weekday ``d`` (Monday = 0, as ``datetime.weekday``).
A window with ``start_s < end_s`` is active on its days from ``start_s`` (inclusive) to
``end_s`` (exclusive). A window crossing midnight (``start_s > end_s``, e.g. 22:00-06:00)
belongs to the day it starts on: on a listed day it is active from ``start_s`` to midnight
*and* on the following day from midnight to ``end_s`` (Friday 22:00-06:00 covers Saturday
03:00 even when Saturday is not listed). Quiet hours are the same rule with every day set.

Because every window is piecewise constant over the week, the active set only changes at
the windows' *boundaries*; :func:`week_boundaries` lists them so a caller can cache one
selection per interval between boundaries (see :func:`week_segment`).

Everything here is pure NumPy/Shapely: times are arguments, never read from a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from geo.graph import StreetGraph
from geo.snap import Snapper

KIND_LIVE = 0
KIND_ROUTE = 1
KIND_ZONE = 2
KIND_HOME = 3
KIND_NAMES = ("live", "route", "zone", "home")

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = 0x7F
DAY_S = 86_400
WEEK_S = 7 * DAY_S

# Route densification step: a vertex every ~20 m before snapping, so that every street
# node the route passes lies within a few metres of a sample point.
ROUTE_STEP_M = 20.0
_M_PER_DEG_LAT = 111_320.0


def days_mask(days: Iterable[str]) -> int:
    """Bit mask of weekday names (``'mon'`` = bit 0 ... ``'sun'`` = bit 6).

    Parameters
    ----------
    days
        Weekday abbreviations as stored on zones and routes.

    Returns
    -------
    The mask; 0 for no days.
    """
    mask = 0
    for day in days:
        try:
            mask |= 1 << DAYS.index(day)
        except ValueError:
            msg = f"unknown weekday {day!r}: expected one of {', '.join(DAYS)}"
            raise ValueError(msg) from None
    return mask


def window_active(
    mask: ArrayLike,
    start_s: ArrayLike,
    end_s: ArrayLike,
    *,
    weekday: int,
    second: float,
) -> NDArray[np.bool_]:
    """Which weekly windows contain a local time: vectorised interval test with midnight wrap.

    A window with ``start_s < end_s`` contains ``t`` when ``t``'s weekday is in ``mask``
    and ``start_s <= second < end_s``. A window with ``start_s > end_s`` crosses midnight
    and contains ``t`` when ``second >= start_s`` on a listed day, or ``second < end_s``
    on the day after a listed day. ``start_s == end_s`` never contains anything.

    Parameters
    ----------
    mask
        Day bit mask per window (bit 0 = Monday).
    start_s, end_s
        Window bounds in seconds after local midnight.
    weekday
        Weekday of the local time (Monday = 0).
    second
        Seconds after local midnight.

    Returns
    -------
    Boolean per window.
    """
    m = np.asarray(mask, dtype=np.int64)
    s = np.asarray(start_s, dtype=np.float64)
    e = np.asarray(end_s, dtype=np.float64)
    today = (m >> weekday) & 1 == 1
    yesterday = (m >> ((weekday - 1) % 7)) & 1 == 1
    plain = (s < e) & today & (s <= second) & (second < e)
    wraps = s > e
    late = wraps & today & (second >= s)
    early = wraps & yesterday & (second < e)
    return np.asarray(plain | late | early)


def week_boundaries(mask: ArrayLike, start_s: ArrayLike, end_s: ArrayLike) -> NDArray[np.int64]:
    """Seconds of the week at which any window opens or closes: sorted, unique.

    Between two consecutive boundaries (cyclically) :func:`window_active` is constant for
    every window, so a selection made at one time of such an interval holds for all of it.

    Parameters
    ----------
    mask, start_s, end_s
        Windows as in :func:`window_active` (seconds are rounded down to whole seconds).

    Returns
    -------
    int64 seconds in ``[0, WEEK_S)``.
    """
    m = np.asarray(mask, dtype=np.int64).ravel()
    s = np.floor(np.asarray(start_s, dtype=np.float64)).astype(np.int64).ravel()
    e = np.floor(np.asarray(end_s, dtype=np.float64)).astype(np.int64).ravel()
    if m.size == 0:
        return np.empty(0, dtype=np.int64)
    # Many anchors share a window (all nodes of one route): work on distinct windows.
    packed = np.unique((m << 40) | (s << 20) | e)  # seconds < 2**17, masks < 2**7
    m, s, e = packed >> 40, (packed >> 20) & 0xFFFFF, packed & 0xFFFFF
    day = np.arange(7, dtype=np.int64)
    listed = ((m[:, None] >> day[None, :]) & 1) == 1  # (w, 7)
    opens = day[None, :] * DAY_S + s[:, None]
    closes = day[None, :] * DAY_S + e[:, None] + np.where(s > e, DAY_S, 0)[:, None]
    out = np.concatenate([opens[listed], closes[listed]]) % WEEK_S
    return np.unique(out)


def week_second(weekday: int, second: float) -> int:
    """Seconds since Monday 00:00 of a local weekday and time of day (whole seconds)."""
    return int(weekday) * DAY_S + int(second)


def week_segment(boundaries: NDArray[np.int64], weekday: int, second: float) -> int:
    """Index of the interval between boundaries that holds a local time.

    Parameters
    ----------
    boundaries
        Output of :func:`week_boundaries`.
    weekday, second
        Local weekday (Monday = 0) and seconds after midnight.

    Returns
    -------
    An integer equal for all times of one interval (the wrap-around interval may get two
    numbers, 0 and ``len(boundaries)``; both are correct keys).
    """
    return int(np.searchsorted(boundaries, week_second(weekday, second), side="right"))


@dataclass(frozen=True, eq=False)
class AnchorTable:
    """Candidate anchors of many members on one graph, with the windows that activate them.

    Anchors are sorted by ``(member, kind)``. ``node`` is -1 where the graph is unknown
    (straight-line ranking only uses ``lon``/``lat``).
    """

    member: NDArray[np.int64]  # dense member number
    kind: NDArray[np.int8]
    node: NDArray[np.int32]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    days_mask: NDArray[np.int64]  # ALL_DAYS for home anchors
    start_s: NDArray[np.float64]
    end_s: NDArray[np.float64]  # start_s == end_s == 0 with ALL_DAYS: always (home)

    @property
    def n_anchors(self) -> int:
        """Number of anchors."""
        return int(self.member.shape[0])

    @classmethod
    def build(
        cls,
        member: ArrayLike,
        kind: ArrayLike,
        node: ArrayLike,
        lon: ArrayLike,
        lat: ArrayLike,
        days_mask: ArrayLike,
        start_s: ArrayLike,
        end_s: ArrayLike,
    ) -> AnchorTable:
        """Sort anchors by member then kind (stable) so that selection is one linear pass.

        Parameters
        ----------
        member, kind, node, lon, lat, days_mask, start_s, end_s
            One value per anchor; home anchors carry ``days_mask=ALL_DAYS``, start 0, end 0.

        Returns
        -------
        The table.
        """
        member_a = np.asarray(member, dtype=np.int64).ravel()
        kind_a = np.asarray(kind, dtype=np.int8).ravel()
        order = np.lexsort((kind_a, member_a))
        return cls(
            member=member_a[order],
            kind=kind_a[order],
            node=np.asarray(node, dtype=np.int32).ravel()[order],
            lon=np.asarray(lon, dtype=np.float64).ravel()[order],
            lat=np.asarray(lat, dtype=np.float64).ravel()[order],
            days_mask=np.asarray(days_mask, dtype=np.int64).ravel()[order],
            start_s=np.asarray(start_s, dtype=np.float64).ravel()[order],
            end_s=np.asarray(end_s, dtype=np.float64).ravel()[order],
        )

    def boundaries(self) -> NDArray[np.int64]:
        """Week seconds where any non-home anchor's window opens or closes."""
        timed = self.kind != KIND_HOME
        return week_boundaries(self.days_mask[timed], self.start_s[timed], self.end_s[timed])

    def select(
        self, *, weekday: int, second: float, member_ok: NDArray[np.bool_] | None = None
    ) -> NDArray[np.int64]:
        """Indices of the active anchors at a local time: best active kind per member.

        One vectorised pass: anchors whose window contains the time (home anchors always)
        and whose member passes ``member_ok`` are kept; as anchors are sorted by member and
        kind, each member's first kept anchor has its best kind, and only anchors of that
        kind survive. So a member on an active route is placed on all the route's nodes
        (of every active route), else in its active zones, else at home.

        Parameters
        ----------
        weekday, second
            Local weekday (Monday = 0) and seconds after local midnight.
        member_ok
            Boolean per dense member number (availability, quiet hours, roles); None: all.

        Returns
        -------
        int64 indices into the table, in table order.
        """
        home = self.kind == KIND_HOME
        ok = home | window_active(
            self.days_mask, self.start_s, self.end_s, weekday=weekday, second=second
        )
        if member_ok is not None:
            ok &= member_ok[self.member]
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return idx
        m = self.member[idx]
        k = self.kind[idx]
        first = np.empty(idx.size, dtype=np.bool_)
        first[0] = True
        np.not_equal(m[1:], m[:-1], out=first[1:])
        # best kind of each run of one member, broadcast back to the run
        run = np.cumsum(first) - 1
        best = k[first][run]
        out: NDArray[np.int64] = idx[k == best]
        return out


def quiet_members(
    quiet_start_s: ArrayLike, quiet_end_s: ArrayLike, *, weekday: int, second: float
) -> NDArray[np.bool_]:
    """Members in their quiet hours at a local time: daily windows, midnight wrap allowed.

    Parameters
    ----------
    quiet_start_s, quiet_end_s
        Seconds after local midnight per member; NaN for members without quiet hours.
    weekday, second
        Local weekday and seconds after midnight.

    Returns
    -------
    Boolean per member.
    """
    s = np.asarray(quiet_start_s, dtype=np.float64)
    e = np.asarray(quiet_end_s, dtype=np.float64)
    has = np.isfinite(s) & np.isfinite(e)
    active = window_active(
        np.full(s.shape, ALL_DAYS),
        np.where(has, s, 0.0),
        np.where(has, e, 0.0),
        weekday=weekday,
        second=second,
    )
    return np.asarray(active & has)


def quiet_boundaries(quiet_start_s: ArrayLike, quiet_end_s: ArrayLike) -> NDArray[np.int64]:
    """Week seconds where any member's quiet hours begin or end."""
    s = np.asarray(quiet_start_s, dtype=np.float64)
    e = np.asarray(quiet_end_s, dtype=np.float64)
    has = np.isfinite(s) & np.isfinite(e)
    return week_boundaries(np.full(int(has.sum()), ALL_DAYS), s[has], e[has])


def zone_nodes(
    polygons: Sequence[shapely.Polygon] | NDArray[np.object_],
    graph: StreetGraph,
    snapper: Snapper,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int32], NDArray[np.float64]]:
    """One representative node per zone: nearest node to a point inside, preferring nodes inside.

    Each polygon's ``point_on_surface`` (a point guaranteed inside it) is snapped with the
    graph's KD-tree in one call. Where that nearest node lies outside the polygon, the
    nodes inside the polygon's bounding box are tested (``shapely.contains_xy``) and the one
    nearest to the representative point is taken; where none is inside, the nearest node
    stays. A node inside the zone is at distance 0 from it, which is what the returned
    distance says.

    Parameters
    ----------
    polygons
        Zones in lon/lat.
    graph
        Graph whose nodes are candidates.
    snapper
        The graph's snapper.

    Returns
    -------
    lon, lat
        Representative point per zone.
    node
        int32 node per zone.
    distance_m
        Distance from the zone to the node: 0 when the node is inside, else the snap
        distance from the representative point.
    """
    polys = np.asarray(polygons, dtype=object)
    if polys.size == 0:
        empty = np.empty(0)
        return empty, empty.copy(), np.empty(0, dtype=np.int32), empty.copy()
    rep = shapely.point_on_surface(polys)
    lon = shapely.get_x(rep)
    lat = shapely.get_y(rep)
    node, dist = snapper.snap(lon, lat)
    node = node.copy()
    dist = dist.copy()
    inside = shapely.contains_xy(polys, graph.lon[node], graph.lat[node])
    dist[inside] = 0.0
    todo = np.flatnonzero(~inside)
    if todo.size:
        order = np.argsort(graph.lon, kind="stable")
        sorted_lon = graph.lon[order]
        bounds = shapely.bounds(polys[todo])
        for j, i in enumerate(todo):
            west, south, east, north = bounds[j]
            lo, hi = np.searchsorted(sorted_lon, [west, east], side="left")
            cand = order[lo:hi]
            cand = cand[(graph.lat[cand] >= south) & (graph.lat[cand] <= north)]
            if cand.size == 0:
                continue
            cand = cand[shapely.contains_xy(polys[i], graph.lon[cand], graph.lat[cand])]
            if cand.size == 0:
                continue
            coslat = np.cos(np.radians(lat[i]))
            d2 = ((graph.lon[cand] - lon[i]) * coslat) ** 2 + (graph.lat[cand] - lat[i]) ** 2
            node[i] = cand[int(np.argmin(d2))]
            dist[i] = 0.0
    return lon, lat, node.astype(np.int32), dist


def route_points(
    lines: Sequence[shapely.LineString] | NDArray[np.object_], *, step_m: float = ROUTE_STEP_M
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Sample points along routes: Shapely segmentize with a step of at most ``step_m``.

    The step is converted to degrees of latitude; a degree of longitude is shorter than one
    of latitude away from the equator, so no sampled gap exceeds ``step_m``.

    Parameters
    ----------
    lines
        Routes in lon/lat.
    step_m
        Largest distance between consecutive samples.

    Returns
    -------
    route
        Index of the route each point belongs to.
    lon, lat
        The points, vertices included.
    """
    arr = np.asarray(lines, dtype=object)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    dense = shapely.segmentize(arr, step_m / _M_PER_DEG_LAT)
    coords, index = shapely.get_coordinates(dense, return_index=True)
    return index.astype(np.int64), coords[:, 0].copy(), coords[:, 1].copy()


def route_nodes(
    route: NDArray[np.int64],
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    snapper: Snapper,
    *,
    max_snap_m: float,
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
    """Snap route samples to nodes: every distinct node within ``max_snap_m`` of a route.

    One vectorised KD-tree query for all samples of all routes; samples farther than
    ``max_snap_m`` from the network are dropped, and each ``(route, node)`` pair kept once
    (with the node's own coordinates).

    Parameters
    ----------
    route, lon, lat
        Output of :func:`route_points`.
    snapper
        Snapper of the graph.
    max_snap_m
        Largest snap distance kept.

    Returns
    -------
    route
        Route index per anchor.
    node
        int32 node per anchor.
    lon, lat
        Node coordinates.
    """
    if route.size == 0:
        return route.copy(), np.empty(0, dtype=np.int32), np.empty(0), np.empty(0)
    node, dist = snapper.snap(lon, lat)
    keep = dist <= max_snap_m
    r = route[keep]
    n = node[keep].astype(np.int64)
    key = np.unique(r * (snapper.graph.n_nodes + 1) + n)
    r_out = key // (snapper.graph.n_nodes + 1)
    n_out = (key % (snapper.graph.n_nodes + 1)).astype(np.int32)
    g = snapper.graph
    return r_out, n_out, g.lon[n_out], g.lat[n_out]
