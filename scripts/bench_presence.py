"""Per-alert ranking through the presence index (no database) on a real extract, synthetic members.

Measures, in one run and on the same inputs: the presence index build (all members snapped
once) and a rebuild after one member changed; per-alert ``PresenceIndex.rank`` latency for
personal alerts (k = limit) and mass alerts (everyone within ERN_MASS_MAX_ETA_S) at three
local times; and a NetworkX baseline (one ``single_source_dijkstra`` with cutoff on the
reversed walk graph to ERN_MASS_MAX_ETA_S, the same targets) for the ratio.

    .venv/bin/python scripts/bench_presence.py [--graph DIR_OR_EXTRACT] [--members 10000]
        [--alerts 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import numpy as np
import shapely

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_SOURCE = REPO / ".." / "shared" / "data" / "osm" / "porto_2015.osm.pbf"
CACHE_DIR = REPO / "var" / "bench-graphs"
MODES = ("walk", "bike", "drive")


def _graphs(graph: str | None) -> Any:
    from api.graphs import GraphStore, ModeGraph
    from geo.graph import ensure_graphs, load_graph
    from geo.snap import Snapper

    path = Path(graph) if graph else DEFAULT_SOURCE
    if path.is_dir():
        out = path
    else:
        out = CACHE_DIR / path.name.split(".")[0]
        ensure_graphs(path, out, MODES, progress=lambda line: print(line, file=sys.stderr))
    store = GraphStore()
    for mode in MODES:
        g = load_graph(out, mode)
        store.by_mode[mode] = ModeGraph(graph=g, snapper=Snapper(g))
    return store


def _rows(bodies: list[dict[str, Any]]) -> tuple[list[Any], list[Any], list[Any]]:
    """Rows shaped like api.presence.repository's queries."""

    def hhmm(s: str) -> dtime:
        h, m = s.split(":")
        return dtime(int(h), int(m))

    def wkb(geojson: dict[str, Any]) -> bytes:
        return bytes(shapely.to_wkb(shapely.geometry.shape(geojson)))

    members, zones, routes = [], [], []
    for b in bodies:
        if not b.get("available", True):
            continue
        mid = uuid.uuid4()
        q = b.get("quiet_hours")
        home = wkb(b["home_zone"]) if b.get("home_zone") else None
        members.append(
            (
                mid,
                b["handle"],
                b["roles"],
                b["mode"],
                b.get("speed_mps"),
                hhmm(q["start"]) if q else None,
                hhmm(q["end"]) if q else None,
                home,
            )
        )
        for z in b.get("zones", []):
            zones.append((mid, wkb(z["area"]), z["days"], hhmm(z["start"]), hhmm(z["end"])))
        for r in b.get("routes", []):
            routes.append((mid, wkb(r["path"]), r["days"], hhmm(r["start"]), hhmm(r["end"])))
    return members, zones, routes


def _pct(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import networkx as nx

    from api.presence.index import PresenceIndex
    from api.settings import Settings
    from geo.synth import synth_members

    store = _graphs(args.graph)
    graphs = {m: mg.graph for m, mg in store.by_mode.items()}
    bodies = synth_members(graphs, args.members, seed=args.seed)
    members, zones, routes = _rows(bodies)
    settings = Settings(
        database_url="postgresql://unused", secret_key="b" * 40, timezone=args.timezone
    )
    started = time.perf_counter()
    index = PresenceIndex.build(
        store, settings, key=("bench",), members=members, zones=zones, routes=routes
    )
    build_s = time.perf_counter() - started
    changed = list(members)
    first = changed[0]
    changed[0] = (
        *first[:7],
        bytes(shapely.to_wkb(shapely.box(*graphs["walk"].bbox).centroid.buffer(0.001))),
    )
    started = time.perf_counter()
    PresenceIndex.build(
        store,
        settings,
        key=("bench2",),
        members=changed,
        zones=zones,
        routes=routes,
        previous=index,
    )
    rebuild_s = time.perf_counter() - started

    walk = graphs["walk"]
    rng = np.random.default_rng(args.seed)
    targets = rng.integers(walk.n_nodes, size=args.alerts).tolist()
    out: dict[str, Any] = {
        "nodes": {m: g.n_nodes for m, g in graphs.items()},
        "members": len(members),
        "anchors": {m: mp.table.n_anchors for m, mp in index.modes.items()},
        "build_s": round(build_s, 3),
        "rebuild_after_one_change_s": round(rebuild_s, 3),
        "rank": {},
    }
    times = {
        "tue_0830": datetime(2026, 11, 24, 8, 30, tzinfo=UTC),
        "tue_1200": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        "sat_0300": datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
    }
    kinds = {
        "personal_k12": (frozenset({"responder", "defense"}), 12),
        "mass": (None, None),
    }
    for label, at in times.items():
        for kind, (roles, limit) in kinds.items():
            t0 = time.perf_counter()
            index.rank(
                lon=float(walk.lon[0]),
                lat=float(walk.lat[0]),
                at=at,
                roles=roles,
                exclude=frozenset(),
                limit=limit,
                max_eta_s=settings.mass_max_eta_s,
            )
            first_ms = (time.perf_counter() - t0) * 1000
            samples, counts = [], []
            for node in targets:
                t0 = time.perf_counter()
                ranking = index.rank(
                    lon=float(walk.lon[node]),
                    lat=float(walk.lat[node]),
                    at=at,
                    roles=roles,
                    exclude=frozenset({members[0][0]}),
                    limit=limit,
                    max_eta_s=settings.mass_max_eta_s,
                )
                samples.append(time.perf_counter() - t0)
                counts.append(len(ranking.candidates))
            out["rank"][f"{label}_{kind}"] = {
                **_pct(samples),
                "first_in_segment_ms": round(first_ms, 2),
                "mean_candidates": round(float(np.mean(counts)), 1),
            }
    rev = walk.to_networkx().reverse(copy=True)
    samples = []
    for node in targets[: min(len(targets), 100)]:
        t0 = time.perf_counter()
        nx.single_source_dijkstra_path_length(
            rev, node, cutoff=settings.mass_max_eta_s, weight="travel_time_s"
        )
        samples.append(time.perf_counter() - t0)
    out["networkx_walk_cutoff_mass_max_eta"] = _pct(samples)
    ours = out["rank"]["tue_0830_personal_k12"]["p50_ms"]
    baseline = out["networkx_walk_cutoff_mass_max_eta"]["p50_ms"]
    out["speedup_vs_networkx_p50"] = round(baseline / ours, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graph", help="compiled graph directory or OSM extract (default: Porto)")
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--alerts", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timezone", default="Europe/Lisbon")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = run(args)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
