"""Geometry checks for member input: ranges, finiteness, closed rings, validity, size, vertex count.

Every check raises :class:`geo.errors.InvalidGeometry` with a message that names the problem
(and the geometry, through ``label``). Pure: coordinate sequences and Shapely in, Shapely out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from shapely.geometry import LineString, Polygon
from shapely.validation import explain_validity

from geo.crs import to_metric
from geo.errors import InvalidGeometry

MIN_RING_POSITIONS = 4
MIN_LINE_POSITIONS = 2


def _fail(label: str, problem: str) -> InvalidGeometry:
    msg = f"{label}: {problem}"
    return InvalidGeometry(msg)


def check_positions(
    coords: Any, *, label: str = "geometry", where: str = ""
) -> NDArray[np.float64]:
    """Check a sequence of [lon, lat] positions: finite numbers inside WGS84 bounds.

    Parameters
    ----------
    coords
        A sequence of positions, each ``[lon, lat]`` in degrees.
    label
        Name of the geometry in error messages.
    where
        Part of the geometry, prefixed to the problem (e.g. ``"ring 1: "``).

    Returns
    -------
    The positions as an ``(n, 2)`` float64 array.
    """
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _fail(label, f"{where}positions must be [lon, lat] pairs of numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise _fail(label, f"{where}positions must be [lon, lat] pairs of numbers")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(label, f"{where}position {i} is not a finite number (NaN or infinity)")
    lon_bad = np.abs(arr[:, 0]) > 180.0
    if lon_bad.any():
        i = int(np.flatnonzero(lon_bad)[0])
        raise _fail(label, f"{where}position {i}: longitude {arr[i, 0]} is outside [-180, 180]")
    lat_bad = np.abs(arr[:, 1]) > 90.0
    if lat_bad.any():
        i = int(np.flatnonzero(lat_bad)[0])
        raise _fail(label, f"{where}position {i}: latitude {arr[i, 1]} is outside [-90, 90]")
    return arr


def _ring(coords: Any, *, label: str, index: int) -> NDArray[np.float64]:
    if len(coords) < MIN_RING_POSITIONS:
        n = len(coords)
        raise _fail(label, f"ring {index} has {n} positions; a closed ring needs at least 4")
    arr = check_positions(coords, label=label, where=f"ring {index}: ")
    if len(arr) < MIN_RING_POSITIONS:
        raise _fail(label, f"ring {index} has {len(arr)} positions; a closed ring needs at least 4")
    if not np.array_equal(arr[0], arr[-1]):
        raise _fail(label, f"ring {index} is not closed: its first and last positions differ")
    if len(np.unique(arr[:-1], axis=0)) < MIN_RING_POSITIONS - 1:
        raise _fail(label, f"ring {index} has fewer than 3 distinct positions")
    return arr


def polygon_from_rings(
    rings: Sequence[Any], *, label: str = "geometry", max_vertices: int | None = None
) -> Polygon:
    """Build a valid polygon from GeoJSON rings (exterior first, then holes).

    Checks, in order: at least one ring; vertex count (all rings); each ring's positions
    (finite, in range), length (>= 4) and closure; then OGC validity (no self-intersection,
    holes inside the shell and not overlapping), as PostGIS ``ST_IsValid`` would.

    Parameters
    ----------
    rings
        GeoJSON Polygon coordinates: a list of linear rings of [lon, lat] positions.
    label
        Name of the geometry in error messages.
    max_vertices
        Largest number of positions over all rings; None: no limit.

    Returns
    -------
    The Shapely polygon (lon/lat).
    """
    if len(rings) == 0:
        raise _fail(label, "a polygon needs an exterior ring")
    if max_vertices is not None:
        count_vertices(rings, label=label, max_vertices=max_vertices)
    arrays = [_ring(r, label=label, index=i) for i, r in enumerate(rings)]
    polygon = Polygon(arrays[0], arrays[1:])
    if not polygon.is_valid:
        raise _fail(label, f"polygon is not valid: {_reason(polygon)}")
    return polygon


def linestring_from_positions(
    positions: Any, *, label: str = "geometry", max_vertices: int | None = None
) -> LineString:
    """Build a line from GeoJSON LineString positions.

    Checks positions (finite, in range), at least two distinct positions and, optionally,
    the vertex count. Self-crossing lines are allowed (a round trip crosses itself).

    Parameters
    ----------
    positions
        A list of [lon, lat] positions.
    label
        Name of the geometry in error messages.
    max_vertices
        Largest number of positions; None: no limit.

    Returns
    -------
    The Shapely line string (lon/lat).
    """
    if max_vertices is not None and len(positions) > max_vertices:
        raise _fail(label, f"{len(positions)} vertices; at most {max_vertices} are allowed")
    arr = check_positions(positions, label=label)
    if len(arr) < MIN_LINE_POSITIONS:
        raise _fail(label, f"a line needs at least 2 positions, got {len(arr)}")
    if len(np.unique(arr, axis=0)) < MIN_LINE_POSITIONS:
        raise _fail(label, "a line needs at least 2 distinct positions")
    line = LineString(arr)
    if not line.is_valid:
        raise _fail(label, f"line is not valid: {_reason(line)}")
    return line


def count_vertices(rings: Sequence[Sequence[Any]], *, label: str, max_vertices: int) -> int:
    """Number of positions over all rings, refusing more than ``max_vertices``.

    Parameters
    ----------
    rings
        Lists of positions.
    label
        Name of the geometry in error messages.
    max_vertices
        The limit.

    Returns
    -------
    The count.
    """
    total = sum(len(r) for r in rings)
    if total > max_vertices:
        raise _fail(label, f"{total} vertices; at most {max_vertices} are allowed")
    return total


def area_m2(polygon: Polygon) -> float:
    """Area in square metres, in the UTM zone of the polygon's centroid.

    Parameters
    ----------
    polygon
        A lon/lat polygon.

    Returns
    -------
    The area (holes excluded); infinity if the polygon cannot be projected.
    """
    value = float(to_metric(polygon).area)
    return value if math.isfinite(value) else math.inf


def length_m(line: LineString) -> float:
    """Length in metres, in the UTM zone of the line's centroid.

    Parameters
    ----------
    line
        A lon/lat line string.

    Returns
    -------
    The length; infinity if the line cannot be projected.
    """
    value = float(to_metric(line).length)
    return value if math.isfinite(value) else math.inf


def check_area(
    polygon: Polygon, *, label: str = "geometry", min_m2: float = 0.0, max_m2: float = math.inf
) -> float:
    """Refuse a polygon whose metric area is outside ``[min_m2, max_m2]``.

    Parameters
    ----------
    polygon
        A valid lon/lat polygon.
    label
        Name of the geometry in error messages.
    min_m2, max_m2
        Bounds on the area in square metres.

    Returns
    -------
    The area in square metres.
    """
    value = area_m2(polygon)
    if value < min_m2:
        raise _fail(
            label,
            f"area is {value:,.0f} m²; at least {min_m2:,.0f} m² is required "
            "(a zone is an area, never an exact address)",
        )
    if value > max_m2:
        shown = "too large to measure" if math.isinf(value) else f"{value:,.0f} m²"
        raise _fail(label, f"area is {shown}; at most {max_m2:,.0f} m² is allowed")
    return value


def check_length(line: LineString, *, label: str = "geometry", max_m: float) -> float:
    """Refuse a line longer than ``max_m`` metres.

    Parameters
    ----------
    line
        A lon/lat line string.
    label
        Name of the geometry in error messages.
    max_m
        The longest allowed length in metres.

    Returns
    -------
    The length in metres.
    """
    value = length_m(line)
    if value > max_m:
        shown = "too long to measure" if math.isinf(value) else f"{value:,.0f} m"
        raise _fail(label, f"length is {shown}; at most {max_m:,.0f} m is allowed")
    return value


def _reason(geom: Any) -> str:
    text = explain_validity(geom)
    kind, _, where = text.partition("[")
    kind = kind.strip().lower() or "invalid"
    if where:
        parts = where.rstrip("]").split()
        if len(parts) >= 2:
            return f"{kind} at lon {float(parts[0]):.6f}, lat {float(parts[1]):.6f}"
    return kind


__all__ = [
    "area_m2",
    "check_area",
    "check_length",
    "check_positions",
    "count_vertices",
    "length_m",
    "linestring_from_positions",
    "polygon_from_rings",
]
