"""Compiling street graphs from OSM way segments: speeds, the largest SCC, CSR arrays."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from geo import __version__
from geo.csr import MODES, StreetGraph, _csr, _min_parallel
from geo.errors import SourceUnavailable
from geo.osm import (
    _classify_source,
    _download,
    _frames_from_osmnx,
    _read_pbf,
    _read_xml,
    _Source,
    _Tables,
    _tables_from_frames,
    file_sha256,
)

FORMAT_VERSION = 2
ATTRIBUTION = "© OpenStreetMap contributors, ODbL"

Progress = Callable[[str], None]

# OSMnx multiplies mph by this factor (not 1.609344); kept so that our speeds equal OSMnx's
_MPH_TO_KPH = 1.60934
_MAXSPEED_RE = re.compile(r"^([0-9][\.,0-9]*?)(?:[ ]?(?:km/h|kmh|kph|mph|knots))?$")

# Last-resort drive speeds (km/h) for an extract with no usable maxspeed tag at all:
# the OSRM car profile's highway-type speeds (profiles/car.lua).
OSRM_CAR_KPH: dict[str, float] = {
    "motorway": 90.0,
    "motorway_link": 45.0,
    "trunk": 85.0,
    "trunk_link": 40.0,
    "primary": 65.0,
    "primary_link": 30.0,
    "secondary": 55.0,
    "secondary_link": 25.0,
    "tertiary": 40.0,
    "tertiary_link": 20.0,
    "unclassified": 25.0,
    "residential": 25.0,
    "living_street": 10.0,
    "service": 15.0,
}
_OSRM_OTHER_KPH = 25.0


@dataclass(frozen=True)
class Speeds:
    """Travel speeds of the modes without speed tags.

    Defaults: walking 1.4 m/s (5 km/h, the usual pedestrian planning speed; Knoblauch et
    al. 1996 measured 1.25-1.5 m/s for adults), cycling 4.2 m/s (15 km/h, the default
    speed of OSRM's bicycle profile). Driving speeds come from the ways' ``maxspeed`` tags
    (see :func:`drive_speeds_kph`).
    """

    walk_mps: float = 1.4
    bike_mps: float = 4.2

    def __post_init__(self) -> None:
        for name in ("walk_mps", "bike_mps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                msg = f"{name} must be a positive number of metres per second, got {value!r}"
                raise ValueError(msg)


# --------------------------------------------------------------------------- speeds


def parse_maxspeed_kph(value: Any) -> float:
    """One OSM ``maxspeed`` value in km/h, by OSMnx's rule.

    A number with an optional unit (``km/h``, ``mph`` converted, ``knots`` not); values
    per lane separated by ``|`` and lists (from merged ways) are averaged; an implicit
    value such as ``"DE:urban"`` is looked up in OSMnx's table; anything else is NaN.

    Parameters
    ----------
    value
        A tag value: a string, a list of strings, or a null.

    Returns
    -------
    Speed in km/h, or NaN when the value does not give one.
    """
    if isinstance(value, list | tuple):
        parsed = [parse_maxspeed_kph(v) for v in value]
        known = [v for v in parsed if not math.isnan(v)]
        return float(np.mean(known)) if known else math.nan
    if not isinstance(value, str):
        return math.nan
    values = []
    for part in value.split("|"):
        match = _MAXSPEED_RE.match(part)
        if match is None:
            return _implicit_maxspeed_kph(value)
        try:
            number = float(match.group(1).replace(",", "."))
        except ValueError:
            return _implicit_maxspeed_kph(value)
        if "mph" in value.lower():
            number *= _MPH_TO_KPH
        values.append(number)
    return float(np.mean(values))


def _implicit_maxspeed_kph(value: str) -> float:
    from osmnx.routing import _IMPLICIT_MAXSPEEDS

    speed = _IMPLICIT_MAXSPEEDS.get(value)
    return math.nan if speed is None else float(speed)


def drive_speeds_kph(highway: Sequence[Any], maxspeed: Sequence[Any]) -> NDArray[np.float64]:
    """Driving speed per edge by OSMnx's imputation (``osmnx.routing.add_edge_speeds``).

    An edge with a usable ``maxspeed`` (:func:`parse_maxspeed_kph`) drives at it; the
    others at the mean tagged speed of the edges of their ``highway`` type in the same
    graph (the first type when a merged edge has a list); a type with no tagged edge at
    the mean of the type means. Only when no edge at all has a usable ``maxspeed``, the
    OSRM car profile's speed of the type (:data:`OSRM_CAR_KPH`) is used, where OSMnx
    would give up.

    Parameters
    ----------
    highway
        ``highway`` tag per directed edge.
    maxspeed
        ``maxspeed`` tag per directed edge (null where absent).

    Returns
    -------
    Speed in km/h per edge.
    """
    hwy = pd.Series([h[0] if isinstance(h, list) else h for h in highway], dtype=object)
    # parse each distinct tag value once
    keys = [tuple(m) if isinstance(m, list) else m for m in maxspeed]
    cache: dict[Any, float] = {}
    tagged = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        try:
            tagged[i] = cache[key]
        except KeyError:
            cache[key] = tagged[i] = parse_maxspeed_kph(
                list(key) if isinstance(key, tuple) else key
            )
        except TypeError:  # unhashable or NaN-like oddities
            tagged[i] = parse_maxspeed_kph(key)
    speed = pd.Series(tagged)
    if speed.notna().any():
        type_mean = speed.groupby(hwy.to_numpy()).mean()
        type_mean = type_mean.fillna(type_mean.mean())
        imputed = hwy.map(type_mean).to_numpy(dtype=np.float64)
    else:
        imputed = hwy.map(lambda h: OSRM_CAR_KPH.get(h, _OSRM_OTHER_KPH)).to_numpy(np.float64)
    out = np.where(np.isnan(tagged), imputed, tagged)
    # a null highway type with no tagged speed: the overall mean
    if np.isnan(out).any():
        out[np.isnan(out)] = np.nanmean(out) if np.isfinite(out).any() else _OSRM_OTHER_KPH
    return out


# --------------------------------------------------------------------------- compile


def _morton(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.uint64]:
    """Z-order (Morton) code of points on a 65,536 x 65,536 grid over their extent."""

    def spread(v: NDArray[np.uint64]) -> NDArray[np.uint64]:
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v

    if len(lon) == 0:
        return np.zeros(0, dtype=np.uint64)
    x = (lon - lon.min()) / max(float(np.ptp(lon)), 1e-12) * 65535
    y = (lat - lat.min()) / max(float(np.ptp(lat)), 1e-12) * 65535
    return spread(x.astype(np.uint64)) | (spread(y.astype(np.uint64)) << np.uint64(1))


def _compile(
    tables: _Tables, mode: str, speeds: Speeds, progress: Progress
) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """Node numbering, largest SCC, travel times, min over parallel edges, both CSRs."""
    order = np.argsort(tables.node_id)
    ids = tables.node_id[order]
    ui = order[np.searchsorted(ids, tables.u)]
    vi = order[np.searchsorted(ids, tables.v)]
    if not (
        np.array_equal(tables.node_id[ui], tables.u)
        and np.array_equal(tables.node_id[vi], tables.v)
    ):
        msg = "edge end nodes missing from the node table"
        raise SourceUnavailable(msg)
    loops = ui == vi
    n_raw = len(tables.node_id)
    keep_edge = ~loops
    adj = csr_matrix(
        (np.ones(int(keep_edge.sum()), dtype=np.int8), (ui[keep_edge], vi[keep_edge])),
        shape=(n_raw, n_raw),
    )
    n_comp, labels = connected_components(adj, directed=True, connection="strong")
    biggest = int(np.bincount(labels).argmax()) if n_raw else 0
    in_scc = labels == biggest
    n_kept = int(in_scc.sum())
    keep_edge &= in_scc[ui] & in_scc[vi]
    progress(
        f"{mode}: largest strongly connected component keeps {n_kept:,} of {n_raw:,} nodes "
        f"({n_raw - n_kept:,} dropped in {n_comp - 1:,} other components)"
    )
    # number the kept nodes along a Z-order curve: neighbours get near numbers, so a
    # search touches fewer cache lines
    kept = np.flatnonzero(in_scc)
    kept = kept[np.argsort(_morton(tables.node_lon[kept], tables.node_lat[kept]), kind="stable")]
    new_id = np.full(n_raw, -1, dtype=np.int64)
    new_id[kept] = np.arange(n_kept)
    u = new_id[ui[keep_edge]]
    v = new_id[vi[keep_edge]]
    length_m = tables.length_m[keep_edge]
    if mode == "drive":
        hwy = [h for h, k in zip(tables.highway, keep_edge, strict=True) if k]
        mxs = [m for m, k in zip(tables.maxspeed, keep_edge, strict=True) if k]
        speed_mps = drive_speeds_kph(hwy, mxs) / 3.6
    else:
        speed_mps = np.full(len(u), speeds.walk_mps if mode == "walk" else speeds.bike_mps)
    u, v, time_s = _min_parallel(u, v, length_m / speed_mps, n_kept)
    indptr, indices, tt = _csr(n_kept, u, v, time_s)
    rev_indptr, rev_indices, rev_tt = _csr(n_kept, v, u, time_s)
    arrays: dict[str, NDArray[Any]] = {
        "indptr": indptr,
        "indices": indices,
        "travel_time_s": tt,
        "rev_indptr": rev_indptr,
        "rev_indices": rev_indices,
        "rev_travel_time_s": rev_tt,
        "lon": tables.node_lon[kept].astype(np.float64),
        "lat": tables.node_lat[kept].astype(np.float64),
        "osm_id": tables.node_id[kept].astype(np.int64),
    }
    counts = {
        "nodes": n_kept,
        "edges": len(indices),
        "raw_nodes": n_raw,
        "raw_edges": len(tables.u),
        "dropped_nodes": n_raw - n_kept,
        "dropped_components": n_comp - 1,
        "parallel_edges_merged": int(keep_edge.sum()) - len(indices),
        "self_loops_dropped": int(loops.sum()),
    }
    return arrays, counts


_RULES = {
    "walk": "all ways both directions; travel_time_s = length_m / walk_mps",
    "bike": (
        "oneway / junction=roundabout respected unless oneway:bicycle says otherwise or a "
        "cycleway=opposite* runs against the traffic; travel_time_s = length_m / bike_mps"
    ),
    "drive": (
        "oneway (yes/true/1, -1/reverse) and junction=roundabout respected; speed from maxspeed "
        "(mph converted, lists averaged), else the mean tagged speed of the highway type in "
        "this graph, else the mean of type means (OSMnx add_edge_speeds)"
    ),
}


def _source_info(src: _Source) -> dict[str, Any]:
    if src.path is None:
        return {"kind": src.kind, "path": None, "text": src.text, "sha256": None}
    stat = src.path.stat()
    return {
        "kind": src.kind,
        "path": str(src.path),
        "text": src.text,
        "sha256": file_sha256(src.path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def build_graphs(
    source: str | Path,
    modes: Sequence[str],
    *,
    speeds: Speeds = Speeds(),
    progress: Progress | None = None,
) -> dict[str, StreetGraph]:
    """Build one compiled street graph per travel mode from OSM data.

    Way segments come from pyrosm (``.osm.pbf``: its walking / cycling / driving way
    filters), from OSMnx's XML reader (``.osm``, ``.osm.bz2``: OSMnx's way filters), or
    from Overpass through OSMnx (a place name or ``bbox:W,S,E,N``, online only). They are
    directed by the mode's one-way rules, simplified at intersections (pyrosm's graph
    tables), cut to the largest strongly connected component, timed (walk and bike at
    ``speeds``, drive by :func:`drive_speeds_kph`) and compiled to CSR arrays, keeping the
    fastest of parallel edges.

    Parameters
    ----------
    source
        Path of an ``.osm.pbf`` / ``.osm`` / ``.osm.bz2`` file, a place name, or
        ``"bbox:W,S,E,N"``.
    modes
        Travel modes among :data:`MODES`.
    speeds
        Walking and cycling speeds.
    progress
        Called with one line of text per step.

    Returns
    -------
    Graphs by mode.

    Raises
    ------
    SourceUnavailable
        Missing or unreadable file, unknown format, or a download while offline.
    """
    say: Progress = progress or (lambda line: None)
    modes = list(dict.fromkeys(modes))
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        msg = f"unknown travel modes {unknown or modes!r}: choose from {', '.join(MODES)}"
        raise ValueError(msg)
    src = _classify_source(source)
    say(f"source {src.text} ({src.kind})")
    info = _source_info(src)
    xml_graph = None
    if src.kind == "xml":
        assert src.path is not None
        say(f"reading OSM XML {src.path}")
        xml_graph = _read_xml(src.path)
    graphs: dict[str, StreetGraph] = {}
    for mode in modes:
        started = time.perf_counter()
        say(f"{mode}: reading ways")
        if src.kind == "pbf":
            assert src.path is not None
            nodes, edges = _read_pbf(src.path, mode)
        elif src.kind == "xml":
            nodes, edges = _frames_from_osmnx(xml_graph, mode, filtered=True)
        else:
            nodes, edges = _frames_from_osmnx(_download(src, mode), mode, filtered=False)
        say(f"{mode}: {len(edges):,} way segments; directing and simplifying")
        tables = _tables_from_frames(nodes, edges, mode)
        say(f"{mode}: {len(tables.node_id):,} nodes, {len(tables.u):,} directed edges; compiling")
        arrays, counts = _compile(tables, mode, speeds, say)
        if counts["nodes"] == 0:
            msg = f"{src.text}: the {mode} graph is empty"
            raise SourceUnavailable(msg)
        elapsed = time.perf_counter() - started
        lon, lat = arrays["lon"], arrays["lat"]
        manifest = {
            "format_version": FORMAT_VERSION,
            "ern_version": __version__,
            "mode": mode,
            "source": info,
            "bbox": [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())],
            "speeds": {"walk_mps": speeds.walk_mps, "bike_mps": speeds.bike_mps}
            | ({"drive": "osmnx_imputation"} if mode == "drive" else {}),
            "rules": _RULES[mode],
            "counts": counts,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_s": round(elapsed, 3),
            "attribution": ATTRIBUTION,
        }
        graphs[mode] = StreetGraph(mode=mode, **arrays, manifest=manifest)
        say(
            f"{mode}: {counts['nodes']:,} nodes, {counts['edges']:,} edges "
            f"({counts['dropped_nodes']:,} nodes outside the largest SCC dropped) "
            f"in {elapsed:.1f} s"
        )
    return graphs
