"""The service-area check: is a point within max_snap_m of the street graphs ranking uses."""

from __future__ import annotations

from api.graphs import GraphStore, ModeGraph
from api.settings import Settings
from geo.errors import GraphUnavailable


def check_in_service_area(
    graphs: GraphStore, settings: Settings, *, lon: float, lat: float
) -> None:
    """OutsideServiceArea beyond max_snap_m of the walk (else first) graph; no graph: accept."""
    mode_graph = _service_area_graph(graphs)
    if mode_graph is None:
        # No graph at all: ranking falls back to straight lines, which work anywhere.
        return
    mode_graph.snapper.snap(lon, lat, max_snap_m=settings.max_snap_m)


def _service_area_graph(graphs: GraphStore) -> ModeGraph | None:
    try:
        return graphs.get("walk")
    except GraphUnavailable:
        return next(iter(graphs.by_mode.values()), None)
