"""The service-area check, and the point it snapped, kept so that ranking snaps it no more.

An alert's (or rally's) point is snapped once per mode graph: the check snaps it to the walk
(else first) graph and returns a :class:`SnappedPoint`; ranking takes that value and snaps
it only to the graphs of the other modes it ranks on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api.graphs import GraphStore, ModeGraph
from api.settings import Settings
from geo.errors import GraphUnavailable


@dataclass(eq=False)
class SnappedPoint:
    """A point and, per mode, its nearest node of that mode's graph and the distance to it."""

    lon: float
    lat: float
    # mode -> (the graph snapped to, node, distance in m); the graph guards against a swap.
    _snaps: dict[str, tuple[ModeGraph, int, float]] = field(default_factory=dict)

    def on(self, mode: str, mode_graph: ModeGraph) -> tuple[int, float]:
        """(node, distance m) on ``mode_graph``, snapped on the first ask for this mode."""
        found = self._snaps.get(mode)
        if found is None or found[0] is not mode_graph:
            node, dist_m = mode_graph.snapper.snap(self.lon, self.lat)
            found = (mode_graph, int(node[0]), float(dist_m[0]))
            self._snaps[mode] = found
        return found[1], found[2]

    def keep(self, mode: str, mode_graph: ModeGraph, *, node: int, dist_m: float) -> None:
        """Remember a snap done elsewhere (the service-area check's, with its max_snap_m)."""
        self._snaps[mode] = (mode_graph, node, dist_m)

    def snapped_modes(self) -> list[str]:
        """Modes whose node is known."""
        return list(self._snaps)


def check_in_service_area(
    graphs: GraphStore, settings: Settings, *, lon: float, lat: float
) -> SnappedPoint:
    """OutsideServiceArea beyond max_snap_m of the walk (else first) graph; no graph: accept.

    Returns the point with its node on that graph, for ranking to reuse.
    """
    point = SnappedPoint(lon=lon, lat=lat)
    found = _service_area_graph(graphs)
    if found is None:
        # No graph at all: ranking falls back to straight lines, which work anywhere.
        return point
    mode, mode_graph = found
    node, dist_m = mode_graph.snapper.snap(lon, lat, max_snap_m=settings.max_snap_m)
    point.keep(mode, mode_graph, node=int(node[0]), dist_m=float(dist_m[0]))
    return point


def _service_area_graph(graphs: GraphStore) -> tuple[str, ModeGraph] | None:
    try:
        return "walk", graphs.get("walk")
    except GraphUnavailable:
        return next(iter(graphs.by_mode.items()), None)
