#!/usr/bin/env python
"""CPU and SQL statements per POST /v1/alerts, measured in one process (no server, no sink).

Usage::

    python scripts/profile_alerts.py [--members N] [--alerts N] [--warm N] [--profile N]
                                     [--top N] [--json]

What it does, with ``scripts/loadtest.py``'s own helpers (so the setup is the load test's
``--quick`` one): Monaco's walk graph, ``--members`` synthetic members (default 1,000) in a
fresh database on ``ERN_TEST_DATABASE_URL``'s server (``ern db upgrade``, dropped at the
end), then the app of ``api.main.create_app`` with its lifespan (its own engine, graphs and
presence warm-up, as ``ern serve`` starts it) but without the outbox workers
(``ERN_RUN_WORKERS=false``: this measures the request path only). ``--warm`` alerts are sent
first and not counted; then ``--alerts`` personal alerts (needed 3) through a TestClient,
each from one of the requesters in turn and with its own Idempotency-Key.

Reported: this process's CPU time per alert (``time.process_time``: the steady figure on a
shared machine, unlike wall time) and the part of it inside create_alert_as (the function
the route runs in its executor); the CPU time of the database's PostgreSQL backends per
alert (from /proc: the server must run on this machine); wall time per alert; SQL
statements per alert, counted at psycopg's cursor (SQLAlchemy's ``before_cursor_execute``
misses the statements run on the driver connection), with the most frequent; and a cProfile
top-``--top`` by cumulative CPU time (a ``thread_time`` timer) of create_alert_as over
``--profile`` further alerts.

The script only uses what old trees have too: copy it into another worktree to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench  # noqa: E402
import loadtest  # noqa: E402


def _backend_cpu_s(db_name: str) -> dict[int, float]:
    """CPU seconds (user + system) so far of each PostgreSQL backend connected to ``db_name``.

    Read from /proc: PostgreSQL must run on this machine (the test server on 127.0.0.1 does).
    """
    import psycopg

    admin = loadtest._admin_url().render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        pids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (db_name,)
            ).fetchall()
        ]
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _statement_counter() -> Counter[str]:
    """Statements sent by this process, by text: every psycopg cursor's execute / executemany.

    Counted at the driver rather than with SQLAlchemy's ``before_cursor_execute`` event, which
    misses the hot path's statements run on the driver connection (api.database's
    DriverStatement).
    """
    import psycopg

    seen: Counter[str] = Counter()
    for name in ("execute", "executemany"):
        original = getattr(psycopg.Cursor, name)

        def counted(self: Any, query: Any, *args: Any, _original: Any = original, **kw: Any) -> Any:
            text = query if isinstance(query, str) else getattr(query, "as_string", repr)(None)
            seen[" ".join(str(text).split())[:120]] += 1
            return _original(self, query, *args, **kw)

        setattr(psycopg.Cursor, name, counted)
    return seen


class _Inside:
    """Wraps the function POST /v1/alerts runs in its executor: its thread CPU, and a profile."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name, self.original = module, name, getattr(module, name)
        self.cpu_s = 0.0
        self.profile: cProfile.Profile | None = None
        setattr(module, name, self)

    def __call__(self, *args: Any, **kw: Any) -> Any:
        c0 = time.thread_time()
        if self.profile is not None:
            self.profile.enable()
        try:
            return self.original(*args, **kw)
        finally:
            if self.profile is not None:
                self.profile.disable()
            self.cpu_s += time.thread_time() - c0


def _hot_path() -> tuple[Any, str]:
    """(module, name) of create_alert_as: api.alerts.raising today, api.alerts.service before."""
    import importlib

    for module in ("api.alerts.raising", "api.alerts.service"):
        try:
            m = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(m, "create_alert_as"):
            return m, "create_alert_as"
    raise SystemExit("no create_alert_as in api.alerts")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from geo.graph import load_graph

    say = bench._say(args.json)
    graph_dir, name, _ = bench.resolve_graphs(None, quick=True, say=say)
    walk = load_graph(graph_dir, "walk")
    bodies, _ = bench.make_members(walk, args.members, loadtest.SEED, graph_dir, say)
    total = args.warm + args.alerts + args.profile
    per_hour = 10
    n_requesters = min(len(bodies) - 1, max(loadtest.MIN_REQUESTERS, math.ceil(total / per_hour)))
    rng = np.random.default_rng(loadtest.SEED)
    points = loadtest.alert_points(walk, total, rng)
    result: dict[str, Any] = {"tree": str(REPO), "graph": name, "members": len(bodies)}
    with loadtest.fresh_database(say) as (url, db_name), tempfile.TemporaryDirectory() as tmp:
        env = loadtest.server_env(url, graph_dir, Path(tmp) / "var", "walk")
        import subprocess

        done = subprocess.run(
            [loadtest.ERN, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)
        tokens, _ = loadtest.load_members(
            url, bodies, webhook_url="http://127.0.0.1:9/hook", want_tokens=n_requesters, say=say
        )
        os.environ.update(env, ERN_RUN_WORKERS="false")
        from api.main import create_app
        from api.settings import Settings

        app = create_app(Settings())
        seen = _statement_counter()
        inside = _Inside(*_hot_path())
        with TestClient(app, raise_server_exceptions=True) as client:
            time.sleep(3.0)  # the lifespan's presence warm-up thread

            def fire(i: int) -> None:
                lon, lat = points[i]
                r = client.post(
                    "/v1/alerts",
                    json=loadtest._alert_body(lon, lat),
                    headers={
                        "Authorization": f"Bearer {tokens[i % n_requesters]}",
                        "Idempotency-Key": str(uuid.uuid4()),
                    },
                )
                if r.status_code != 201:
                    raise RuntimeError(f"{r.status_code} {r.text}")

            for i in range(args.warm):
                fire(i)
            pg0 = _backend_cpu_s(db_name)
            seen.clear()
            inside.cpu_s = 0.0
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(args.warm, args.warm + args.alerts):
                fire(i)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            n_stmt = sum(seen.values())
            pg1 = _backend_cpu_s(db_name)
            pg = sum(t - pg0.get(pid, 0.0) for pid, t in pg1.items())
            result.update(
                alerts=args.alerts,
                cpu_ms_per_alert=1000 * cpu / args.alerts,
                wall_ms_per_alert=1000 * wall / args.alerts,
                create_alert_as_cpu_ms_per_alert=1000 * inside.cpu_s / args.alerts,
                postgres_cpu_ms_per_alert=1000 * pg / args.alerts,
                statements_per_alert=n_stmt / args.alerts,
                statements=[[round(c / args.alerts, 2), s] for s, c in seen.most_common(args.top)],
            )
            # create_alert_as only (it runs in the executor thread); CPU time, not wall time.
            prof = inside.profile = cProfile.Profile(time.thread_time)
            for i in range(args.warm + args.alerts, total):
                fire(i)
            inside.profile = None
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
            result["profile"] = out.getvalue()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--alerts", type=int, default=300)
    p.add_argument("--warm", type=int, default=20)
    p.add_argument("--profile", type=int, default=100)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = run(args)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"tree {r['tree']}: {r['members']} members, {r['alerts']} alerts on {r['graph']}")
    print(
        f"CPU {r['cpu_ms_per_alert']:.2f} ms/alert (of which create_alert_as "
        f"{r['create_alert_as_cpu_ms_per_alert']:.2f}), "
        f"wall {r['wall_ms_per_alert']:.2f} ms/alert, "
        f"PostgreSQL backends' CPU {r['postgres_cpu_ms_per_alert']:.2f} ms/alert"
    )
    print(f"SQL statements {r['statements_per_alert']:.2f}/alert; most frequent (per alert):")
    for n, s in r["statements"]:
        print(f"  {n:6.2f}  {s}")
    print(r["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
