"""The street network of a compiled graph as a few simplified polylines, for drawing a base map."""

from __future__ import annotations

import numpy as np
import shapely
from shapely.ops import linemerge

from geo.graph import StreetGraph

_CACHE_KEY = "streets.lines"


def street_lines(
    graph: StreetGraph, *, tolerance_deg: float = 1e-5, decimals: int = 5
) -> list[list[list[float]]]:
    """The graph's edges as merged, simplified polylines of ``[lon, lat]`` pairs.

    Each undirected edge is kept once (a two-way street is two directed edges), the straight
    segments are merged into maximal lines where nodes have degree two (Shapely's
    ``linemerge``), simplified with Douglas-Peucker at ``tolerance_deg`` and rounded to
    ``decimals`` (1e-5 degrees is about a metre). The answer is cached on the graph.

    Parameters
    ----------
    graph
        A compiled street graph.
    tolerance_deg
        Douglas-Peucker tolerance, in degrees.
    decimals
        Decimal places kept in the coordinates.

    Returns
    -------
    Polylines, each a list of at least two ``[lon, lat]`` pairs.
    """
    key = f"{_CACHE_KEY}:{tolerance_deg}:{decimals}"
    cached: list[list[list[float]]] | None = graph._cache.get(key)
    if cached is None:
        cached = _compute(graph, tolerance_deg=tolerance_deg, decimals=decimals)
        graph._cache[key] = cached
    return cached


def _compute(graph: StreetGraph, *, tolerance_deg: float, decimals: int) -> list[list[list[float]]]:
    counts = np.diff(graph.indptr)
    u = np.repeat(np.arange(graph.n_nodes, dtype=np.int64), counts)
    v = graph.indices.astype(np.int64)
    keep = u != v
    lo = np.minimum(u[keep], v[keep])
    hi = np.maximum(u[keep], v[keep])
    if lo.size == 0:
        return []
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    starts = np.stack([graph.lon[pairs[:, 0]], graph.lat[pairs[:, 0]]], axis=1)
    ends = np.stack([graph.lon[pairs[:, 1]], graph.lat[pairs[:, 1]]], axis=1)
    segments = shapely.linestrings(np.stack([starts, ends], axis=1))
    merged = linemerge(shapely.multilinestrings(segments))
    simple = shapely.simplify(merged, tolerance_deg, preserve_topology=False)
    parts = shapely.get_parts(simple)
    out: list[list[list[float]]] = []
    for part in parts:
        coords = np.round(shapely.get_coordinates(part), decimals)
        if len(coords) >= 2:
            out.append(coords.tolist())
    return out
