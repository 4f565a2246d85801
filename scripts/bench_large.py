#!/usr/bin/env python
"""The engine on a large synthetic graph: a real compiled graph tiled into a grid of copies.

Usage::

    python scripts/bench_large.py --graph var/graphs-porto-v2 --mode drive --tiles 8 [--out DIR]

Copies the graph ``tiles x tiles`` times side by side (each copy shifted by the graph's
own extent), joins neighbouring copies by 64 edges between their nearest border nodes,
saves it in the current format and measures, in this process: build and save time, load
time (memory-mapped), RSS and PSS after touching every array, k=10 nearest members
(``nearest_members``, 15 min limit), a mass query (every member within 30 min), and the
coverage field (``k_nearest_field``, k=3 from every responder) over the whole graph.
Members: one per 100 nodes at random nodes. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _mem() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return out


def tile(graph, tiles: int):  # type: ignore[no-untyped-def]
    """The graph copied tiles x tiles times, neighbouring copies joined at their borders."""
    from geo.graph import StreetGraph

    n = graph.n_nodes
    u0 = np.repeat(np.arange(n, dtype=np.int64), np.diff(graph.indptr))
    v0 = graph.indices.astype(np.int64)
    w0 = graph.travel_time_s.astype(np.float64)
    west, south, east, north = graph.bbox
    dx, dy = (east - west) * 1.001, (north - south) * 1.001
    us, vs, ws, lons, lats = [], [], [], [], []
    for i in range(tiles):
        for j in range(tiles):
            k = i * tiles + j
            us.append(u0 + k * n)
            vs.append(v0 + k * n)
            ws.append(w0)
            lons.append(graph.lon + j * dx)
            lats.append(graph.lat + i * dy)
    # join: the 64 nodes nearest the east (north) border to those nearest the west (south)
    order_e = np.argsort(-graph.lon)[:64]
    order_w = np.argsort(graph.lon)[:64]
    order_n = np.argsort(-graph.lat)[:64]
    order_s = np.argsort(graph.lat)[:64]
    join_s = 60.0
    for i in range(tiles):
        for j in range(tiles):
            k = i * tiles + j
            if j + 1 < tiles:
                a, b = order_e + k * n, order_w + (k + 1) * n
                us += [a, b]
                vs += [b, a]
                ws += [np.full(64, join_s)] * 2
            if i + 1 < tiles:
                a, b = order_n + k * n, order_s + (k + tiles) * n
                us += [a, b]
                vs += [b, a]
                ws += [np.full(64, join_s)] * 2
    return StreetGraph.from_edges(
        graph.mode,
        np.concatenate(us),
        np.concatenate(vs),
        np.concatenate(ws),
        np.concatenate(lons),
        np.concatenate(lats),
        manifest={"mode": graph.mode, "source": {"tiled": tiles}},
    )


def main(argv: list[str] | None = None) -> int:
    """Build, save, load and query the tiled graph; print JSON."""
    from geo import _kernels
    from geo.graph import load_graph, save_graph
    from geo.route import AnchorIndex, k_nearest_field, nearest_members

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--mode", default="drive")
    p.add_argument("--tiles", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("var/bench-large"))
    p.add_argument("--queries", type=int, default=50)
    args = p.parse_args(argv)
    result: dict[str, object] = {"command": " ".join(["python", *sys.argv])}
    base = load_graph(args.graph, args.mode)
    t0 = time.perf_counter()
    big = tile(base, args.tiles)
    result["build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    path = save_graph(big, args.out)
    result["save_s"] = round(time.perf_counter() - t0, 2)
    result |= {"nodes": big.n_nodes, "edges": big.n_edges, "file_mb": path.stat().st_size >> 20}
    del big
    result["before_load"] = _mem()
    t0 = time.perf_counter()
    g = load_graph(args.out, args.mode, warm_up=False)
    result["load_s"] = round(time.perf_counter() - t0, 4)
    _kernels.warm_up()
    for name in ("indptr", "indices", "travel_time_s", "rev_indptr", "rev_indices", "lon"):
        float(getattr(g, name)[::512].sum())  # touch the pages
        float(getattr(g, name).sum())
    result["after_load_touched"] = _mem()
    rng = np.random.default_rng(7)
    n_members = g.n_nodes // 100
    nodes = rng.integers(0, g.n_nodes, n_members)
    anchors = AnchorIndex.build(
        g.n_nodes, np.arange(n_members), nodes, offset_s=np.full(n_members, 90.0)
    )
    targets = rng.integers(0, g.n_nodes, args.queries)
    nearest_members(g, int(targets[0]), anchors, k=10, max_eta_s=900.0)
    times = []
    for t in targets:
        t0 = time.perf_counter()
        nearest_members(g, int(t), anchors, k=10, max_eta_s=900.0)
        times.append(time.perf_counter() - t0)
    result["k10_p50_ms"] = round(statistics.median(times) * 1e3, 3)
    result["k10_max_ms"] = round(max(times) * 1e3, 3)
    times, found = [], []
    for t in targets[:20]:
        t0 = time.perf_counter()
        ids, _ = nearest_members(g, int(t), anchors, k=None, max_eta_s=1800.0)
        times.append(time.perf_counter() - t0)
        found.append(len(ids))
    result["mass_p50_ms"] = round(statistics.median(times) * 1e3, 2)
    result["mass_found_mean"] = round(float(np.mean(found)), 1)
    t0 = time.perf_counter()
    field = k_nearest_field(g, nodes, np.arange(n_members), k=3, max_time_s=1800.0)
    result["coverage_k3_s"] = round(time.perf_counter() - t0, 2)
    result["coverage_reached_share"] = round(float(np.isfinite(field[:, 2]).mean()), 3)
    result["members"] = n_members
    result["after_queries"] = _mem()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
