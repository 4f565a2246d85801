"""Synthetic members on a real street graph, for demos, tests and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj
import shapely
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from geo.crs import WGS84, metric_crs

if TYPE_CHECKING:
    from geo.graph import StreetGraph

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
DEFAULT_MODE_SHARES: Mapping[str, float] = {"walk": 0.5, "bike": 0.2, "drive": 0.3}
# Door-to-door commute times by mode, seconds (short urban commutes; the long tail is cut
# so the bounded searches that draw them stay small).
DEFAULT_COMMUTE_S: Mapping[str, tuple[float, float]] = {
    "walk": (300.0, 2100.0),
    "bike": (300.0, 1800.0),
    # free-flow times: a 25-minute free-flow drive is a long urban commute at rush hour
    "drive": (300.0, 1500.0),
}
OUTBOUND_WINDOW = ("07:00", "09:30")
RETURN_WINDOW = ("16:00", "19:00")
MAX_ROUTE_VERTICES = 2000
MAX_ROUTE_LENGTH_M = 100_000.0
MAX_ZONE_AREA_M2 = 25_000_000.0
_CHUNK = 32
_HEX = 6


@dataclass(frozen=True)
class _Commute:
    """One member's commute: node paths out and back, and their travel times."""

    out_nodes: NDArray[np.int64]
    back_nodes: NDArray[np.int64]
    out_s: float
    back_s: float


def synth_members(
    graphs: StreetGraph | Mapping[str, StreetGraph],
    n: int,
    *,
    seed: int,
    responder_share: float = 0.6,
    defense_share: float = 0.1,
    mode_shares: Mapping[str, float] | None = None,
    commuter_share: float = 0.85,
    available_share: float = 0.85,
    quiet_hours_share: float = 0.3,
    min_zone_area_m2: float = 40_000.0,
    commute_s: Mapping[str, tuple[float, float]] | None = None,
    max_route_vertices: int = MAX_ROUTE_VERTICES,
    max_route_length_m: float = MAX_ROUTE_LENGTH_M,
    handle_prefix: str | None = None,
    webhook_base: str = "http://127.0.0.1:8099/hooks",
    email_domain: str = "example.org",
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Synthetic members by degree-weighted node sampling and bounded shortest-path trees.

    Homes, work places and commutes lie on a real street graph. Home and work nodes are
    drawn with probability proportional to node degree (in + out edges), a proxy for
    street density, so homes cluster where streets do. Each commuter's
    work node is drawn from the nodes whose travel time from home falls in a band below a
    commute time drawn uniformly per mode; one SciPy bounded Dijkstra from the home node
    on the member's own mode graph (forward), and one on the reversed graph for directed
    modes, give both shortest paths (home to work in the morning, work to home in the
    evening). Zones are jittered hexagons built in a metric CRS with the node inside but
    off centre. Schedules: outbound inside 07:00-09:30, return inside 16:00-19:00, work
    zone in between, Monday to Friday. Everything is drawn from one
    ``numpy.random.Generator`` seeded with ``seed``, so the same inputs give identical
    output.

    Parameters
    ----------
    graphs
        One graph (all members get its mode) or a mapping mode -> graph.
    n
        Number of members.
    seed
        Seed of the random generator.
    responder_share, defense_share
        Fractions of members holding the ``responder`` and ``defense`` roles, drawn
        independently; counts are the rounded shares, exactly.
    mode_shares
        Travel-mode mix, renormalised over the modes present in ``graphs``
        (default 50 % walk, 20 % bike, 30 % drive).
    commuter_share
        Fraction of members with a work zone and commute routes; the others have a home
        zone only.
    available_share
        Fraction of members with ``available: true``.
    quiet_hours_share
        Fraction of members with quiet hours (a night window); the others have none.
    min_zone_area_m2
        Minimum zone area; zones are drawn between 1.15 and 1.6 times this.
    commute_s
        Per mode, the (shortest, longest) commute travel time drawn from.
    max_route_vertices, max_route_length_m
        Route limits: longer node paths are thinned to evenly spaced nodes; commutes
        longer than the length limit are redrawn.
    handle_prefix
        Prefix of the handles (default ``f"s{seed}-"``); handles are unique in the output.
    webhook_base, email_domain
        Where contact details point (local receivers and a reserved domain).
    progress
        Called with one line of text per travel mode.

    Returns
    -------
    One dict per member in the ``POST /v1/members`` body shape: ``handle``, ``roles``,
    ``mode``, ``home_zone``, ``zones``, ``routes``, ``available``, ``quiet_hours`` (only
    when the member has some), ``contact``.
    """
    if n < 0:
        msg = f"n must be >= 0, got {n}"
        raise ValueError(msg)
    for name, share in (
        ("responder_share", responder_share),
        ("defense_share", defense_share),
        ("commuter_share", commuter_share),
        ("available_share", available_share),
        ("quiet_hours_share", quiet_hours_share),
    ):
        if not 0.0 <= share <= 1.0:
            msg = f"{name} must be within [0, 1], got {share}"
            raise ValueError(msg)
    by_mode = _graphs_by_mode(graphs)
    shares = _mode_shares(by_mode, mode_shares)
    commute = {**DEFAULT_COMMUTE_S, **(commute_s or {})}
    rng = np.random.default_rng(seed)
    prefix = f"s{seed}-" if handle_prefix is None else handle_prefix
    width = max(5, len(str(max(n - 1, 0))))

    modes = _assign_counts(rng, n, shares)
    responder = _exact_share(rng, n, responder_share)
    defense = _exact_share(rng, n, defense_share)
    commuter = _exact_share(rng, n, commuter_share)
    available = _exact_share(rng, n, available_share)
    quiet = _exact_share(rng, n, quiet_hours_share)

    members: list[dict[str, Any] | None] = [None] * n
    for mode in sorted(shares):
        idx = np.flatnonzero(modes == mode)
        if idx.size == 0:
            continue
        graph = by_mode[mode]
        lo_s, hi_s = commute[mode]
        if progress is not None:
            progress(f"{mode}: {idx.size:,} members on {graph.n_nodes:,} nodes")
        homes, commutes = _homes_and_commutes(
            graph,
            rng,
            commuter[idx],
            lo_s=lo_s,
            hi_s=hi_s,
            max_route_length_m=max_route_length_m,
        )
        crs = _graph_crs(graph)
        home_zones = _zones(graph, homes, rng, crs, min_zone_area_m2)
        work_nodes = np.array([c.out_nodes[-1] for c in commutes if c is not None], np.int64)
        work_zones = iter(_zones(graph, work_nodes, rng, crs, min_zone_area_m2))
        for j, i in enumerate(idx):
            handle = f"{prefix}{i:0{width}d}"
            body: dict[str, Any] = {
                "handle": handle,
                "roles": _roles(bool(responder[i]), bool(defense[i])),
                "mode": mode,
                "home_zone": home_zones[j],
                "zones": [],
                "routes": [],
                "available": bool(available[i]),
            }
            c = commutes[j]
            if c is not None:
                zone, routes = _schedule(
                    graph, c, next(work_zones), rng, max_route_vertices=max_route_vertices
                )
                body["zones"] = [zone]
                body["routes"] = routes
            if quiet[i]:
                body["quiet_hours"] = {
                    "start": _hhmm(int(rng.integers(22 * 60, 23 * 60 + 31, endpoint=False))),
                    "end": _hhmm(int(rng.integers(5 * 60 + 30, 7 * 60 + 1, endpoint=False))),
                }
            body["contact"] = _contact(handle, int(i), seed, webhook_base, email_domain)
            members[i] = body
    return [m for m in members if m is not None]


def members_to_geojson(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Wrap member bodies as a GeoJSON FeatureCollection.

    Each feature's geometry is the member's home zone and its ``properties`` hold the
    rest of the body, so GIS tools draw the homes and :func:`members_from_geojson` gives
    back the exact ``POST /v1/members`` bodies.

    Parameters
    ----------
    members
        Member bodies as returned by :func:`synth_members`.

    Returns
    -------
    A ``FeatureCollection`` dict.
    """
    features = []
    for m in members:
        props = {k: v for k, v in m.items() if k != "home_zone"}
        features.append({"type": "Feature", "geometry": m["home_zone"], "properties": props})
    return {"type": "FeatureCollection", "features": features}


def members_from_geojson(
    obj: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Member bodies from a FeatureCollection or a plain list of bodies.

    Parameters
    ----------
    obj
        Output of :func:`members_to_geojson`, or a JSON list of member bodies.

    Returns
    -------
    The member bodies, in order.
    """
    if isinstance(obj, Mapping):
        if obj.get("type") != "FeatureCollection":
            msg = "expected a GeoJSON FeatureCollection or a list of member bodies"
            raise ValueError(msg)
        out = []
        for f in obj["features"]:
            props = dict(f["properties"])
            body = {"handle": props.pop("handle"), **props, "home_zone": f["geometry"]}
            out.append(body)
        return out
    return [dict(m) for m in obj]


# --- graphs and modes -------------------------------------------------------------------


def _graphs_by_mode(graphs: StreetGraph | Mapping[str, StreetGraph]) -> dict[str, StreetGraph]:
    by_mode = dict(graphs) if isinstance(graphs, Mapping) else {graphs.mode: graphs}
    if not by_mode:
        msg = "no graph given"
        raise ValueError(msg)
    for mode, g in by_mode.items():
        if g.n_nodes < 2:
            msg = f"the {mode} graph has {g.n_nodes} nodes; at least 2 are needed"
            raise ValueError(msg)
    return by_mode


def _mode_shares(
    by_mode: Mapping[str, StreetGraph], mode_shares: Mapping[str, float] | None
) -> dict[str, float]:
    wanted = DEFAULT_MODE_SHARES if mode_shares is None else mode_shares
    if len(by_mode) == 1 and mode_shares is None:
        return {next(iter(by_mode)): 1.0}
    shares = {m: float(s) for m, s in wanted.items() if m in by_mode and s > 0}
    total = sum(shares.values())
    if total <= 0:
        msg = f"no mode share left for the graphs given ({sorted(by_mode)}), shares {dict(wanted)}"
        raise ValueError(msg)
    return {m: s / total for m, s in shares.items()}


def _assign_counts(rng: np.random.Generator, n: int, shares: Mapping[str, float]) -> NDArray[Any]:
    """Largest-remainder rounding of ``n * share`` per mode, in random member order."""
    names = sorted(shares)
    raw = np.array([shares[m] * n for m in names])
    counts = np.floor(raw).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    labels = np.repeat(np.array(names, dtype=object), counts)
    return rng.permutation(labels)


def _exact_share(rng: np.random.Generator, n: int, share: float) -> NDArray[np.bool_]:
    out = np.zeros(n, dtype=bool)
    out[rng.permutation(n)[: round(share * n)]] = True
    return out


def _roles(responder: bool, defense: bool) -> list[str]:
    roles = []
    if responder:
        roles.append("responder")
    if defense:
        roles.append("defense")
    return roles


def _contact(
    handle: str, i: int, seed: int, webhook_base: str, email_domain: str
) -> dict[str, str]:
    # +49 15x mobile-style numbers; the map i -> number is injective for i < 10**9.
    number = (seed * 7_919 + i) % 10**9
    return {
        "email": f"{handle}@{email_domain}",
        "phone": f"+4915{number:09d}",
        "webhook_url": f"{webhook_base.rstrip('/')}/{handle}",
    }


# --- homes and commutes -----------------------------------------------------------------


def _degree(graph: StreetGraph) -> NDArray[np.float64]:
    deg = np.diff(graph.indptr) + np.diff(graph.rev_indptr)
    return np.asarray(deg, dtype=np.float64)


def _csr(indptr: Any, indices: Any, weight: Any, n: int) -> csr_matrix:
    # csgraph keeps the minimum of parallel edges and treats stored zeros as edges.
    return csr_matrix(
        (np.asarray(weight, dtype=np.float64), np.asarray(indices), np.asarray(indptr)),
        shape=(n, n),
    )


def _is_symmetric(graph: StreetGraph) -> bool:
    return (
        np.array_equal(graph.indptr, graph.rev_indptr)
        and np.array_equal(graph.indices, graph.rev_indices)
        and np.array_equal(graph.travel_time_s, graph.rev_travel_time_s)
    )


def _homes_and_commutes(
    graph: StreetGraph,
    rng: np.random.Generator,
    is_commuter: NDArray[np.bool_],
    *,
    lo_s: float,
    hi_s: float,
    max_route_length_m: float,
    attempts: int = 5,
) -> tuple[NDArray[np.int64], list[_Commute | None]]:
    """Home nodes for all, commutes for commuters; infeasible homes are redrawn."""
    n_nodes = graph.n_nodes
    deg = _degree(graph)
    p = deg / deg.sum()
    fwd = _csr(graph.indptr, graph.indices, graph.travel_time_s, n_nodes)
    rev = (
        None
        if _is_symmetric(graph)
        else _csr(graph.rev_indptr, graph.rev_indices, graph.rev_travel_time_s, n_nodes)
    )
    m = is_commuter.size
    homes = rng.choice(n_nodes, size=m, p=p).astype(np.int64)
    target_s = rng.uniform(lo_s, hi_s, size=m)
    commutes: list[_Commute | None] = [None] * m
    todo = np.flatnonzero(is_commuter)
    for attempt in range(attempts):
        if todo.size == 0:
            break
        if attempt > 0:
            homes[todo] = rng.choice(n_nodes, size=todo.size, p=p)
        failed = []
        # Sorting by target time lets each chunk search only as far as it needs.
        order = todo[np.argsort(target_s[todo], kind="stable")]
        for start in range(0, order.size, _CHUNK):
            chunk = order[start : start + _CHUNK]
            limit = float(target_s[chunk].max())
            d_out, pred_out = dijkstra(
                fwd, indices=homes[chunk], limit=limit, return_predecessors=True
            )
            if rev is None:
                d_back, pred_back = d_out, pred_out
            else:
                d_back, pred_back = dijkstra(
                    rev, indices=homes[chunk], limit=1.5 * limit, return_predecessors=True
                )
            for row, i in enumerate(chunk):
                c = _draw_commute(
                    graph,
                    rng,
                    deg,
                    int(homes[i]),
                    float(target_s[i]),
                    d_out[row],
                    pred_out[row],
                    d_back[row],
                    pred_back[row],
                    symmetric=rev is None,
                    max_route_length_m=max_route_length_m,
                )
                if c is None:
                    failed.append(i)
                commutes[i] = c
        todo = np.array(sorted(failed), dtype=np.int64)
    return homes, commutes


def _draw_commute(
    graph: StreetGraph,
    rng: np.random.Generator,
    deg: NDArray[np.float64],
    home: int,
    target_s: float,
    d_out: NDArray[np.float64],
    pred_out: NDArray[np.int32],
    d_back: NDArray[np.float64],
    pred_back: NDArray[np.int32],
    *,
    symmetric: bool,
    max_route_length_m: float,
) -> _Commute | None:
    reachable = np.isfinite(d_out) & np.isfinite(d_back)
    cand = np.flatnonzero(reachable & (d_out >= 0.8 * target_s) & (d_out <= target_s))
    if cand.size == 0:
        # A small graph or an enclave: the farthest tenth of the reachable places.
        far = np.flatnonzero(reachable & (d_out > 0))
        if far.size == 0:
            return None
        cand = far[d_out[far] >= np.quantile(d_out[far], 0.9)]
    w = deg[cand]
    work = int(cand[rng.choice(cand.size, p=w / w.sum())])
    if graph.lon[work] == graph.lon[home] and graph.lat[work] == graph.lat[home]:
        return None
    out_nodes = _walk_back(pred_out, work)[::-1]
    back_nodes = out_nodes[::-1] if symmetric else _walk_back(pred_back, work)
    if out_nodes[0] != home or back_nodes[-1] != home:
        return None
    for path in (out_nodes, back_nodes):
        if _path_length_m(graph, path) > max_route_length_m:
            return None
    return _Commute(out_nodes, back_nodes, float(d_out[work]), float(d_back[work]))


def _walk_back(pred: NDArray[np.int32], node: int) -> NDArray[np.int64]:
    """Nodes from ``node`` back along the predecessor tree to the search's source."""
    path = [node]
    p = int(pred[node])
    while p >= 0:
        path.append(p)
        p = int(pred[p])
    return np.array(path, dtype=np.int64)


def _path_length_m(graph: StreetGraph, nodes: NDArray[np.int64]) -> float:
    lon = np.radians(graph.lon[nodes])
    lat = np.radians(graph.lat[nodes])
    # Haversine on the WGS84 mean radius: plenty for a length cap.
    a = (
        np.sin(np.diff(lat) / 2) ** 2
        + np.cos(lat[:-1]) * np.cos(lat[1:]) * np.sin(np.diff(lon) / 2) ** 2
    )
    return float(2 * 6_371_008.8 * np.arcsin(np.sqrt(np.clip(a, 0, 1))).sum())


# --- zones ------------------------------------------------------------------------------


def _graph_crs(graph: StreetGraph) -> pyproj.CRS:
    return metric_crs(float(np.median(graph.lon)), float(np.median(graph.lat)))


@lru_cache(maxsize=16)
def _transformers(epsg: int) -> tuple[pyproj.Transformer, pyproj.Transformer]:
    crs = pyproj.CRS.from_epsg(epsg)
    return (
        pyproj.Transformer.from_crs(WGS84, crs, always_xy=True),
        pyproj.Transformer.from_crs(crs, WGS84, always_xy=True),
    )


def _zones(
    graph: StreetGraph,
    nodes: NDArray[np.int64],
    rng: np.random.Generator,
    crs: pyproj.CRS,
    min_area_m2: float,
) -> list[dict[str, Any]]:
    """Jittered hexagons (metric CRS) of 1.15-1.6 x ``min_area_m2`` holding each node off centre."""
    m = nodes.size
    if m == 0:
        return []
    if min_area_m2 * 1.6 >= MAX_ZONE_AREA_M2:
        msg = f"min_area_m2={min_area_m2} leaves no room below the {MAX_ZONE_AREA_M2:.0f} m2 cap"
        raise ValueError(msg)
    epsg = crs.to_epsg()
    if epsg is None:
        msg = f"CRS {crs.name!r} has no EPSG code"
        raise ValueError(msg)
    fwd, inv = _transformers(epsg)
    nx_m, ny_m = fwd.transform(graph.lon[nodes], graph.lat[nodes])
    area = min_area_m2 * rng.uniform(1.15, 1.6, size=m)
    r = np.sqrt(area / (1.5 * math.sqrt(3.0)))
    # The node sits up to 0.4 r from the centre; the jittered hexagon is star-shaped
    # around its centre and contains the disc of radius 0.85 * cos(30 deg) r = 0.74 r.
    off_r = r * rng.uniform(0.15, 0.4, size=m)
    off_a = rng.uniform(0, 2 * np.pi, size=m)
    cx = nx_m + off_r * np.cos(off_a)
    cy = ny_m + off_r * np.sin(off_a)
    rot = rng.uniform(0, 2 * np.pi / _HEX, size=m)
    ang = rot[:, None] + np.arange(_HEX)[None, :] * (2 * np.pi / _HEX)
    rad = r[:, None] * rng.uniform(0.85, 1.15, size=(m, _HEX))
    vx = rad * np.cos(ang)
    vy = rad * np.sin(ang)
    # Rescale so the jitter keeps the drawn area (shoelace formula on the centred ring).
    shoelace = 0.5 * np.abs(
        np.sum(vx * np.roll(vy, -1, axis=1) - np.roll(vx, -1, axis=1) * vy, axis=1)
    )
    s = np.sqrt(area / shoelace)
    lon, lat = inv.transform(cx[:, None] + vx * s[:, None], cy[:, None] + vy * s[:, None])
    lon = np.round(np.asarray(lon), 7)
    lat = np.round(np.asarray(lat), 7)
    out = []
    for k in range(m):
        ring = np.column_stack([lon[k], lat[k]])
        ring = np.vstack([ring, ring[:1]])  # counter-clockwise: angles increase
        poly = shapely.Polygon(ring)
        if not poly.is_valid:
            msg = f"generated an invalid zone around node {int(nodes[k])}"
            raise RuntimeError(msg)
        out.append({"type": "Polygon", "coordinates": [ring.tolist()]})
    return out


# --- schedules --------------------------------------------------------------------------


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _window(rng: np.random.Generator, travel_s: float, lo: str, hi: str) -> tuple[int, int]:
    """A 5-minute-aligned window of the trip (travel time plus slack) inside [lo, hi]."""
    dur = 5 * math.ceil((travel_s * rng.uniform(1.1, 1.4) + 300.0) / 300.0)
    lo_m, hi_m = _minutes(lo), _minutes(hi)
    dur = min(dur, hi_m - lo_m)
    start = lo_m + 5 * int(rng.integers(0, (hi_m - lo_m - dur) // 5 + 1))
    return start, start + dur


def _line(graph: StreetGraph, nodes: NDArray[np.int64], max_vertices: int) -> dict[str, Any]:
    if nodes.size > max_vertices:
        keep = np.unique(np.linspace(0, nodes.size - 1, max_vertices).round().astype(np.int64))
        nodes = nodes[keep]
    xy = np.column_stack([graph.lon[nodes], graph.lat[nodes]])
    # Distinct nodes may share coordinates; a route never repeats a vertex in place.
    same = np.r_[False, np.all(xy[1:] == xy[:-1], axis=1)]
    xy = xy[~same]
    return {"type": "LineString", "coordinates": xy.tolist()}


def _schedule(
    graph: StreetGraph,
    c: _Commute,
    work_zone: dict[str, Any],
    rng: np.random.Generator,
    *,
    max_route_vertices: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out_start, out_end = _window(rng, c.out_s, *OUTBOUND_WINDOW)
    back_start, back_end = _window(rng, c.back_s, *RETURN_WINDOW)
    days = list(WEEKDAYS)
    zone = {
        "name": "work",
        "area": work_zone,
        "days": days,
        "start": _hhmm(out_end),
        "end": _hhmm(back_start),
    }
    routes = [
        {
            "path": _line(graph, c.out_nodes, max_route_vertices),
            "days": days,
            "start": _hhmm(out_start),
            "end": _hhmm(out_end),
        },
        {
            "path": _line(graph, c.back_nodes, max_route_vertices),
            "days": list(days),
            "start": _hhmm(back_start),
            "end": _hhmm(back_end),
        },
    ]
    return zone, routes
