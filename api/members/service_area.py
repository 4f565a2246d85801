"""Whether a member's home zone, zones and routes lie where the loaded street graphs can rank them.

"Outside" is exactly what alert ranking (``api.presence.index``) would ignore, decided with
the same geo functions on the graph ranking uses:

- the graph is the member's own mode's; when that mode has no graph (ranked by straight
  line), any loaded graph will do;
- a zone (home or scheduled) is outside when its representative node
  (:func:`geo.presence.zone_nodes`: a street node inside it, else the node nearest to a
  point inside it) is farther than ``ERN_MAX_SNAP_M`` from it;
- a route is outside when none of its points (sampled every 20 m,
  :func:`geo.presence.route_points`) is within ``ERN_MAX_SNAP_M`` of a node; a route that
  leaves the area only in part is kept, its inside part is used;
- with no graph loaded at all (``ERN_ALLOW_NO_GRAPHS``: straight-line ranking everywhere),
  nothing is outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from api.graphs import GraphStore, ModeGraph
from api.settings import Settings
from geo import presence as gp
from geo.errors import OutsideServiceArea


@dataclass(frozen=True)
class Placed:
    """A geometry to check and the field it came from (e.g. ``zones.0.area``)."""

    label: str
    geometry: shapely.Polygon | shapely.LineString


def _graphs_for(graphs: GraphStore, mode: str) -> list[ModeGraph]:
    own = graphs.by_mode.get(mode)
    return [own] if own is not None else list(graphs.by_mode.values())


def _zones_inside(
    polygons: Sequence[shapely.Polygon], mode_graph: ModeGraph, *, max_snap_m: float
) -> np.ndarray:
    if not polygons:
        return np.zeros(0, dtype=bool)
    _, _, _, dist = gp.zone_nodes(polygons, mode_graph.graph, mode_graph.snapper)
    return np.asarray(dist <= max_snap_m, dtype=bool)


def _routes_inside(
    lines: Sequence[shapely.LineString], mode_graph: ModeGraph, *, max_snap_m: float
) -> np.ndarray:
    if not lines:
        return np.zeros(0, dtype=bool)
    which, lon, lat = gp.route_points(lines)
    _, dist = mode_graph.snapper.snap(lon, lat)
    near = which[dist <= max_snap_m]
    return np.isin(np.arange(len(lines)), near)


def _area_text(mode_graphs: Sequence[ModeGraph]) -> str:
    parts = []
    for g in mode_graphs:
        west, south, east, north = g.graph.bbox
        parts.append(
            f"{g.graph.mode}: lon {west:.3f} to {east:.3f}, lat {south:.3f} to {north:.3f}"
        )
    return "; ".join(parts)


def check_member_geometry(
    graphs: GraphStore, settings: Settings, *, mode: str, placed: Sequence[Placed]
) -> None:
    """OutsideServiceArea naming the first geometry no loaded graph can rank; no graph: accept."""
    candidates = _graphs_for(graphs, mode)
    if not candidates or not placed:
        return
    is_zone = np.array([isinstance(p.geometry, shapely.Polygon) for p in placed], dtype=bool)
    zones = [p.geometry for p in placed if isinstance(p.geometry, shapely.Polygon)]
    routes = [p.geometry for p in placed if isinstance(p.geometry, shapely.LineString)]
    ok = np.zeros(len(placed), dtype=bool)
    for mode_graph in candidates:
        ok[is_zone] |= _zones_inside(zones, mode_graph, max_snap_m=settings.max_snap_m)
        ok[~is_zone] |= _routes_inside(routes, mode_graph, max_snap_m=settings.max_snap_m)
    if ok.all():
        return
    i = int(np.flatnonzero(~ok)[0])
    what = "its nearest street node is not" if is_zone[i] else "no point of it is"
    graph_modes = "/".join(g.graph.mode for g in candidates)
    msg = (
        f"{placed[i].label}: outside the service area: {what} within ERN_MAX_SNAP_M "
        f"({settings.max_snap_m:g} m) of the {graph_modes} street network, so it could never "
        f"be ranked (the graphs cover {_area_text(candidates)}; GET /healthz: service_area)"
    )
    raise OutsideServiceArea(msg)
