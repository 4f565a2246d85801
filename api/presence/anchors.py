"""Members' home zones, zones and routes snapped to a mode's graph as anchors (memoised by WKB)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

from api.graphs import ModeGraph
from geo import presence as gp


def seconds_of_day(value: time | None) -> float:
    """Seconds after midnight of a time of day (None: NaN)."""
    if value is None:
        return math.nan
    return float(value.hour * 3600 + value.minute * 60 + value.second)


def posix_seconds(value: datetime | None) -> float:
    """POSIX seconds of an instant (None: NaN)."""
    return math.nan if value is None else value.timestamp()


@dataclass(frozen=True)
class Schedules:
    """Zones or routes of indexed members: owner number, geometry WKB and weekly window."""

    owner: NDArray[np.int64]
    wkb: NDArray[np.object_]
    mask: NDArray[np.int64]
    start_s: NDArray[np.float64]
    end_s: NDArray[np.float64]

    @classmethod
    def parse(cls, rows: Sequence[Any], number: dict[uuid.UUID, int]) -> Schedules:
        """From (member_id, wkb, days, start, end) rows; rows of unindexed members dropped."""
        kept = [row for row in rows if row[0] in number]
        wkb = np.empty(len(kept), dtype=object)
        wkb[:] = [bytes(row[1]) for row in kept]
        return cls(
            owner=np.array([number[row[0]] for row in kept], dtype=np.int64),
            wkb=wkb,
            mask=np.array([gp.days_mask(row[2]) for row in kept], dtype=np.int64),
            start_s=np.array([seconds_of_day(row[3]) for row in kept], dtype=np.float64),
            end_s=np.array([seconds_of_day(row[4]) for row in kept], dtype=np.float64),
        )

    def of(self, in_mode: NDArray[np.bool_]) -> Schedules:
        """The rows whose owner is selected."""
        sel = in_mode[self.owner] if self.owner.size else np.zeros(0, dtype=bool)
        return Schedules(
            self.owner[sel], self.wkb[sel], self.mask[sel], self.start_s[sel], self.end_s[sel]
        )


# Node of a zone outside the service area: the zone gives no anchor.
_FAR = -2


@dataclass(eq=False)
class SnapMemo:
    """Snapped anchors of geometries (by WKB) on one graph, reused by the next rebuild.

    A member edit changes the presence token and forces a rebuild; only geometries not seen
    before are snapped again, so a rebuild costs the database read and concatenation, not
    the snapping of every member's zones and routes.
    """

    zones: dict[bytes, tuple[int, float, float]] = field(default_factory=dict)
    routes: dict[bytes, tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]] = field(
        default_factory=dict
    )

    def zone_anchors(
        self, wkbs: Sequence[bytes], mode_graph: ModeGraph | None, *, max_snap_m: float
    ) -> tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
        """Node (``_FAR``: none; -1: no graph) and lon/lat per zone."""
        missing = list({w for w in wkbs if w not in self.zones})
        if missing:
            polys = shapely.from_wkb(missing)
            if mode_graph is not None:
                _, _, node, dist = gp.zone_nodes(polys, mode_graph.graph, mode_graph.snapper)
                # A zone whose nearest node is beyond max_snap_m lies outside the service area.
                node = np.where(dist <= max_snap_m, node, _FAR)
                lon, lat = mode_graph.graph.lon[node], mode_graph.graph.lat[node]
            else:
                rep = shapely.point_on_surface(polys)
                lon, lat = shapely.get_x(rep), shapely.get_y(rep)
                node = np.full(len(missing), -1)
            for w, n, x, y in zip(missing, node.tolist(), lon.tolist(), lat.tolist(), strict=True):
                self.zones[w] = (n, x, y)
        got = [self.zones[w] for w in wkbs]
        return (
            np.array([g[0] for g in got], dtype=np.int32),
            np.array([g[1] for g in got], dtype=np.float64),
            np.array([g[2] for g in got], dtype=np.float64),
        )

    def route_anchors(
        self, wkbs: Sequence[bytes], mode_graph: ModeGraph | None, *, max_snap_m: float
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
        """Route index, node (-1: no graph) and lon/lat per anchor of the routes."""
        missing = list({w for w in wkbs if w not in self.routes})
        if missing:
            which, lon, lat = gp.route_points(shapely.from_wkb(missing))
            if mode_graph is not None:
                which, node, lon, lat = gp.route_nodes(
                    which, lon, lat, mode_graph.snapper, max_snap_m=max_snap_m
                )
            else:
                node = np.full(which.size, -1, dtype=np.int32)
            cuts = np.searchsorted(which, np.arange(1, len(missing)))
            for w, n, x, y in zip(
                missing, np.split(node, cuts), np.split(lon, cuts), np.split(lat, cuts), strict=True
            ):
                self.routes[w] = (n, x, y)
        got = [self.routes[w] for w in wkbs]
        if not got:
            return np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0), np.empty(0)
        counts = np.array([g[0].size for g in got], dtype=np.int64)
        return (
            np.repeat(np.arange(len(got), dtype=np.int64), counts),
            np.concatenate([g[0] for g in got]).astype(np.int32),
            np.concatenate([g[1] for g in got]),
            np.concatenate([g[2] for g in got]),
        )

    def keep_only(self, zones: set[bytes], routes: set[bytes]) -> None:
        """Forget geometries no member uses any more."""
        self.zones = {w: v for w, v in self.zones.items() if w in zones}
        self.routes = {w: v for w, v in self.routes.items() if w in routes}


def mode_table(
    in_mode: NDArray[np.bool_],
    home: list[bytes | None],
    zones: Schedules,
    routes: Schedules,
    mode_graph: ModeGraph | None,
    *,
    max_snap_m: float,
    memo: SnapMemo,
) -> gp.AnchorTable:
    """Home, zone and route anchors of one mode's members, snapped to its graph if any."""
    parts: list[tuple[NDArray[Any], ...]] = []

    # Home zones and scheduled zones: one representative node each.
    owners = np.array(
        [i for i in np.flatnonzero(in_mode).tolist() if home[i] is not None], np.int64
    )
    mode_zones = zones.of(in_mode)
    n_home = owners.size
    wkbs: list[bytes] = [home[i] for i in owners.tolist()] + list(mode_zones.wkb)
    if wkbs:
        owner = np.concatenate([owners, mode_zones.owner])
        kind = np.concatenate(
            [
                np.full(n_home, gp.KIND_HOME, np.int8),
                np.full(mode_zones.owner.size, gp.KIND_ZONE, np.int8),
            ]
        )
        mask = np.concatenate([np.full(n_home, gp.ALL_DAYS, np.int64), mode_zones.mask])
        start = np.concatenate([np.zeros(n_home), mode_zones.start_s])
        end = np.concatenate([np.zeros(n_home), mode_zones.end_s])
        node, lon, lat = memo.zone_anchors(wkbs, mode_graph, max_snap_m=max_snap_m)
        keep = node != _FAR
        parts.append(tuple(a[keep] for a in (owner, kind, node, lon, lat, mask, start, end)))

    # Routes: every node near the route.
    mode_routes = routes.of(in_mode)
    if mode_routes.owner.size:
        which, node, lon, lat = memo.route_anchors(
            list(mode_routes.wkb), mode_graph, max_snap_m=max_snap_m
        )
        parts.append(
            (
                mode_routes.owner[which],
                np.full(which.size, gp.KIND_ROUTE, np.int8),
                node,
                lon,
                lat,
                mode_routes.mask[which],
                mode_routes.start_s[which],
                mode_routes.end_s[which],
            )
        )

    if not parts:
        return gp.AnchorTable.build(*(np.empty(0) for _ in range(8)))
    columns = [np.concatenate([p[i] for p in parts]) for i in range(8)]
    return gp.AnchorTable.build(*columns)
