"""GET /v1/coverage (and /profile) over HTTP: a real `ern serve`, PostGIS, seeded synthetic members.

Called by ``scripts/bench.py --coverage`` (or alone). A fresh database on the test server
gets the schema (``ern db upgrade``), the synthetic drive members of the bench (bulk
insert, as ``scripts/loadtest.py`` does) and a coordinator (``ern admin
create-coordinator``); ``ern serve`` then loads the compiled Porto drive graph. Measured
from an httpx client on the same machine: the first map (presence index built from the
database), maps at other minutes of the same hour (computed, cache miss) and the same map
again (cache hit), and the 168-hour profile uncached then cached.

    .venv/bin/python scripts/bench_coverage_http.py [--members 10000] [--reps 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
import loadtest

# Tuesday 1 December 2026, in the server's time zone (loadtest.TIMEZONE, Lisbon = UTC)
AT = "2026-12-01T12:{minute:02d}:00+00:00"


def _ms(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "n": a.size}


def measure_http(
    graph_dir: Path,
    bodies: list[dict[str, Any]],
    *,
    reps: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The figures (see the module docstring); ``bodies`` are drive members."""
    out: dict[str, Any] = {"members": len(bodies), "mode": "drive"}
    with loadtest.fresh_database(say) as (url, _name), tempfile.TemporaryDirectory() as tmp:
        env = loadtest.server_env(url, graph_dir, Path(tmp) / "var", "drive")
        env["ERN_RUN_WORKERS"] = "false"  # no alerts: nothing to deliver
        done = subprocess.run(
            [loadtest.ERN, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            msg = f"ern db upgrade failed:\n{done.stdout}\n{done.stderr}"
            raise RuntimeError(msg)
        _, load_s = loadtest.load_members(
            url, bodies, webhook_url="http://127.0.0.1:9/unused", want_tokens=0, say=say
        )
        out["load_members_s"] = load_s
        done = subprocess.run(
            [loadtest.ERN, "admin", "create-coordinator", "--handle", "bench-coordinator"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            msg = f"ern admin create-coordinator failed:\n{done.stdout}\n{done.stderr}"
            raise RuntimeError(msg)
        token = done.stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        log = Path(tmp) / "serve.log"
        with (
            loadtest.running_server(env, log, say) as base,
            httpx.Client(base_url=base, headers=headers, timeout=600) as client,
        ):

            def get(path: str, **params: Any) -> tuple[float, httpx.Response]:
                t0 = time.perf_counter()
                r = client.get(path, params=params)
                took = time.perf_counter() - t0
                r.raise_for_status()
                return took, r

            took, r = get("/v1/coverage", mode="drive", k=3, at=AT.format(minute=0))
            out["first_map_s"] = took  # the presence index is built from the database
            out["cells"] = len(r.json()["features"])
            out["answer_bytes"] = len(r.content)
            uncached, cached = [], []
            for i in range(reps):
                took, r = get("/v1/coverage", mode="drive", k=3, at=AT.format(minute=1 + i))
                assert not r.json()["ern"]["cached"]
                uncached.append(took)
            for _ in range(reps):
                took, r = get("/v1/coverage", mode="drive", k=3, at=AT.format(minute=1))
                cached.append(took)
            out["map_uncached"] = _ms(uncached)
            out["map_cached"] = _ms(cached)
            say(
                f"http: map uncached p50 {out['map_uncached']['p50_ms']:.0f} ms, cached "
                f"{out['map_cached']['p50_ms']:.1f} ms"
            )
            took, r = get("/v1/coverage/profile", mode="drive", k=3)
            out["profile_uncached_s"] = took
            assert len(r.json()["hours"]) == 168
            cached = [get("/v1/coverage/profile", mode="drive", k=3)[0] for _ in range(reps)]
            out["profile_cached"] = _ms(cached)
            say(f"http: profile uncached {took:.2f} s")
    return out


def main() -> None:
    """Command line."""
    from geo.graph import load_graph

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    say = bench._say(False)
    d, _, _source = bench.resolve_graphs(None, quick=False, say=say)
    drive = load_graph(d, "drive")
    bodies, _ = bench.make_members(drive, args.members, args.seed, d, say)
    out = measure_http(d, bodies, reps=args.reps, say=say)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
