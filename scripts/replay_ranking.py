"""Replay synthetic alerts on a real extract: ETA-only ranking vs ranking by expected arrival.

Synthetic members sit on random nodes of the walk graph with true acceptance rates drawn
from 0.1-0.6 and a past record (notifications ~ Poisson, accepts ~ Binomial at the true
rate). Each alert (random node, needed 1-3) is ranked from the same street-network ETAs
(mobilisation + reverse Dijkstra) both ways, with the same random answers per (alert,
member) for both (common random numbers):

- ``eta``: nearest first, first wave ceil(needed / rate) (ern before issue 14);
- ``arrival``: geo.acceptance.arrival_order over the members' shrunk estimates, first wave
  the smallest prefix with P(>= needed accept) >= confidence, capped at ceil(needed / rate).

Later waves go out every wave timeout while fewer than ``needed`` have accepted:
ceil(missing / rate) more from the reserve, nearest first (as the escalation worker does).
Answers come 10-50 s after a notification. Reported: time to the first and to the
needed-th acceptance, and notifications sent per alert (medians, means, p90).

    .venv/bin/python scripts/replay_ranking.py [--extract PBF] [--alerts 400] [--members 400]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geo.acceptance import arrival_order, shrunk_rates, wave_size  # noqa: E402
from geo.graph import ensure_graphs  # noqa: E402

OSM_DIR = REPO.parent / "shared" / "data" / "osm"
DEFAULT_EXTRACT = OSM_DIR / "monaco_2016.osm.pbf"
RATE = 0.35  # ERN_ACCEPTANCE_RATE
PRIOR_N = 10.0  # ERN_ACCEPTANCE_PRIOR_N
CONFIDENCE = 0.9  # ERN_WAVE_CONFIDENCE
MOBILIZATION_S = 90.0
WAVE_TIMEOUT_S = 60.0
MAX_ETA_S = 1800.0
RESERVE_WAVES = 4
HORIZON_S = 1800.0


def simulate(
    order: NDArray[np.int64],
    first: int,
    *,
    eta_s: NDArray[np.float64],
    accepts: NDArray[np.bool_],
    delay_s: NDArray[np.float64],
    needed: int,
) -> dict[str, float]:
    """One alert under one policy: waves until ``needed`` accepted; times and messages."""
    remaining = list(order.tolist())
    sent: list[tuple[int, float]] = []
    wave_at = 0.0
    size = first
    accept_times: list[float] = []
    while remaining and wave_at <= HORIZON_S:
        wave, remaining = remaining[:size], remaining[size:]
        sent.extend((i, wave_at) for i in wave)
        accept_times = sorted(t + delay_s[i] for i, t in sent if accepts[i])
        next_at = wave_at + WAVE_TIMEOUT_S
        done_by_next = sum(1 for t in accept_times if t <= next_at)
        if done_by_next >= needed:
            break
        missing = needed - done_by_next
        size = math.ceil(missing / RATE - 1e-9)
        # Later waves: nearest first among the reserve (the escalation worker's order).
        remaining.sort(key=lambda i: eta_s[i])
        wave_at = next_at
    # Messages are counted until the needed-th acceptance (a wave after it is never sent).
    fulfilled = len(accept_times) >= needed
    return {
        "notified": float(len(sent)),
        "first_s": accept_times[0] if accept_times else math.nan,
        "needed_s": accept_times[needed - 1] if fulfilled else math.nan,
        "fulfilled": float(fulfilled),
    }


def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"alerts": len(rows)}
    for key in ("notified", "first_s", "needed_s"):
        values = np.array([r[key] for r in rows], dtype=float)
        values = values[~np.isnan(values)]
        out[key] = {
            "median": float(np.median(values)) if values.size else math.nan,
            "mean": float(values.mean()) if values.size else math.nan,
            "p90": float(np.percentile(values, 90)) if values.size else math.nan,
        }
    out["fulfilled_share"] = float(np.mean([r["fulfilled"] for r in rows]))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", type=Path, default=DEFAULT_EXTRACT)
    parser.add_argument("--alerts", type=int, default=400)
    parser.add_argument("--members", type=int, default=400)
    parser.add_argument("--history-mean", type=float, default=8.0, help="past notifications")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    name = args.extract.name.split(".")[0]
    graph = ensure_graphs(args.extract, REPO / "var" / "bench-graphs" / name, ["walk"])["walk"]
    n = graph.n_nodes
    reverse = csr_matrix(
        (graph.rev_travel_time_s.astype(np.float64), graph.rev_indices, graph.rev_indptr),
        shape=(n, n),
    )
    rng = np.random.default_rng(args.seed)
    home = rng.integers(0, n, args.members)
    true_p = rng.uniform(0.1, 0.6, args.members)
    past_n = rng.poisson(args.history_mean, args.members)
    past_a = rng.binomial(past_n, true_p)
    network = past_a.sum() / max(1, past_n.sum())
    estimate = shrunk_rates(past_a, past_n, prior_rate=network, prior_n=PRIOR_N)
    results: dict[str, list[dict[str, float]]] = {"eta": [], "arrival": []}
    for _ in range(args.alerts):
        target = int(rng.integers(0, n))
        needed = int(rng.integers(1, 4))
        # Answers drawn once per alert: both policies see the same people say the same.
        accepts = rng.random(args.members) < true_p
        delay = rng.uniform(10.0, 50.0, args.members)
        dist = dijkstra(reverse, indices=target, limit=MAX_ETA_S)
        eta = MOBILIZATION_S + dist[home]
        reach = np.flatnonzero(eta <= MAX_ETA_S)
        if reach.size == 0:
            continue
        cap = math.ceil(needed / RATE - 1e-9)
        ranked = reach[np.argsort(eta[reach], kind="stable")][: RESERVE_WAVES * cap]
        by_eta = ranked
        by_arrival = ranked[arrival_order(eta[ranked], estimate[ranked])]
        first_new = wave_size(estimate[by_arrival], needed, confidence=CONFIDENCE, cap=cap)
        common = {"eta_s": eta, "accepts": accepts, "delay_s": delay, "needed": needed}
        results["eta"].append(simulate(by_eta, min(cap, by_eta.size), **common))  # type: ignore[arg-type]
        results["arrival"].append(simulate(by_arrival, max(1, first_new), **common))  # type: ignore[arg-type]
    report = {
        "extract": str(args.extract.name),
        "nodes": int(n),
        "members": args.members,
        "alerts_simulated": len(results["eta"]),
        "network_rate_estimate": float(network),
        "seed": args.seed,
        "eta": summary(results["eta"]),
        "arrival": summary(results["arrival"]),
        "elapsed_s": time.perf_counter() - started,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
