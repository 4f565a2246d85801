#!/usr/bin/env python
"""End-to-end load test of POST /v1/alerts: a running `ern serve`, PostGIS, synthetic members.

Usage::

    python scripts/loadtest.py [--graph-source PATH] [--members N] [--alerts N] [--clients N]
                               [--quick] [--json]

Steps, all on the loopback interface and undone at the end:

1. The street graphs (walk + drive) of the extract, compiled once into
   ``var/bench-graphs/<name>/`` and ``--members`` synthetic walking members, both through
   ``scripts/bench.py``'s helpers and caches (default: Porto and 10,000 members; ``--quick``:
   Monaco and 1,000).
2. A fresh database ``ern_load_<hex>`` on the PostgreSQL of ``ERN_TEST_DATABASE_URL``
   (default ``postgresql://postgres@127.0.0.1:5432``) with PostGIS, then ``ern db upgrade``.
3. The members are inserted in-process with ``api.members.service``'s own checks, encryption
   and token hashing (as POST /v1/members does), 1,000 per transaction and flush. Every
   member's contact is a webhook to a local sink server that answers 200, so
   notifications go through the real outbox workers.
4. ``ern serve`` (uvicorn, one process, its in-process workers on) as a subprocess; the
   script waits for /healthz, then sends warm-up alerts that are not counted.
5. ``--alerts`` personal alerts (needed 3) from ``--clients`` concurrent clients
   (``httpx.AsyncClient``), each from one of >= 250 requesters (the rate limit is
   ERN_ALERTS_PER_HOUR per member), each with its own Idempotency-Key, at a point within
   ~50 m of a random walk-graph node. Latency is the client-side wall time per request.
6. Outbox rows delivered to the sink are counted after the workers had up to
   ``--drain-s`` seconds to catch up; then the server is stopped and the database dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench  # noqa: E402  (scripts/bench.py: graph and member caches, machine info)

ERN = str(Path(sys.executable).parent / "ern")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "loadtest-" + "k" * 40  # a throwaway database; never a real deployment's key
TIMEZONE = "Europe/Lisbon"
SEED = 7
NEEDED = 3
MIN_REQUESTERS = 250
WARM_UP_ALERTS = 8
JITTER_M = 50.0
REQUEST_TIMEOUT_S = 30.0

FULL: dict[str, Any] = {
    "members": 10_000, "alerts": 2_000, "clients": 32, "source": bench.DEFAULT_SOURCE
}  # fmt: skip
QUICK: dict[str, Any] = {
    "members": 1_000, "alerts": 200, "clients": 8, "source": bench.QUICK_SOURCE
}  # fmt: skip


# --------------------------------------------------------------------------- pieces


class Sink:
    """A webhook receiver on 127.0.0.1 that answers 200 and counts what it got."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink.lock:
                    sink.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin_url() -> Any:
    from sqlalchemy.engine import make_url

    base = os.environ.get("ERN_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    return make_url(base).set(drivername="postgresql", database="postgres")


@contextmanager
def fresh_database(say: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """A new database with PostGIS on the test server; dropped (FORCE) on the way out."""
    import psycopg

    admin = _admin_url()
    admin_dsn = admin.render_as_string(hide_password=False)
    name = f"ern_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name)
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION postgis")
        say(f"database {name} created on {admin.host}:{admin.port or 5432}")
        yield url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False), name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        say(f"database {name} dropped")


def _log_slow_statements(db_name: str, ms: int) -> None:
    """Make the PostgreSQL server log this database's statements slower than ``ms`` (diagnosis)."""
    import psycopg

    admin = _admin_url().render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db_name}" SET log_min_duration_statement = {int(ms)}')


def server_env(database_url: str, graph_dir: Path, var_dir: Path, modes: str) -> dict[str, str]:
    """The environment of `ern db upgrade` and `ern serve`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERN_")}
    env.update(
        ERN_DATABASE_URL=database_url,
        ERN_SECRET_KEY=SECRET,
        ERN_GRAPH_DIR=str(graph_dir),
        ERN_GRAPH_MODES=modes,
        ERN_VAR_DIR=str(var_dir),
        ERN_TIMEZONE=TIMEZONE,
        # Later waves would add escalation work inside the measured minute; they are not
        # what this measures (see docs/benchmarks.md).
        ERN_WAVE_TIMEOUT_S="3600",
    )
    return env


def _bulk_rows(
    session: Any, settings: Any, bodies: Sequence[dict[str, Any]], webhook_url: str
) -> list[str]:
    """Members, tokens and audit rows of ``bodies``, built as create_member builds them, one flush.

    The same checks (geometry limits, home-zone rule), contact encryption and token hashing as
    ``api.members.service.create_member``, through its own helpers; what differs is that one
    flush inserts the whole batch (SQLAlchemy batches the INSERTs) instead of ~9 round trips
    per member (two flushes: tokens have no relationship to order their INSERT after
    members). Returns the batch's bearer tokens.
    """
    from geoalchemy2.shape import from_shape

    from api.members import service
    from api.members.crypto import hash_token, new_token
    from api.members.models import ApiToken, AuditEvent, Member
    from api.members.schemas import MemberCreate

    tokens: list[str] = []
    extra: list[Any] = []
    for body in bodies:
        data = MemberCreate.model_validate({**body, "contact": {"webhook_url": webhook_url}})
        service._check_geometry(
            settings, home_zone=data.home_zone, zones=data.zones, routes=data.routes
        )
        member = Member(
            id=uuid.uuid4(),
            handle=data.handle,
            roles=list(data.roles),
            mode=data.mode,
            speed_mps=data.speed_mps,
            home_zone=from_shape(data.home_zone.to_shapely(), srid=4326)
            if data.home_zone
            else None,
            available=data.available,
            quiet_start=data.quiet_hours.start if data.quiet_hours else None,
            quiet_end=data.quiet_hours.end if data.quiet_hours else None,
            contact_ciphertext=service._encrypt_contact(settings, data.contact),
            zones=[service._zone_row(z) for z in data.zones],
            routes=[service._route_row(r) for r in data.routes],
        )
        service._check_home_zone_rule(member)
        token = new_token()
        session.add(member)
        extra.append(ApiToken(member_id=member.id, token_hash=hash_token(token)))
        extra.append(AuditEvent(actor_id=None, subject_id=member.id, action="member.create"))
        tokens.append(token)
    session.flush()  # members, zones, routes (tokens have no ORM relationship to order them)
    session.add_all(extra)
    session.flush()
    return tokens


def load_members(
    database_url: str,
    bodies: Sequence[dict[str, Any]],
    *,
    webhook_url: str,
    want_tokens: int,
    say: Callable[[str], None],
) -> tuple[list[str], float]:
    """Insert the members in transactions of 1,000 (see _bulk_rows); tokens of the first few."""
    from pydantic import SecretStr

    from api.database import make_engine, make_session_factory, transaction
    from api.settings import Settings

    settings = Settings(database_url=database_url, secret_key=SecretStr(SECRET), timezone=TIMEZONE)
    engine = make_engine(database_url, pool_size=1)
    factory = make_session_factory(engine)
    tokens: list[str] = []
    started = time.perf_counter()
    try:
        for lo in range(0, len(bodies), 1000):
            with transaction(factory) as session:
                batch = _bulk_rows(session, settings, bodies[lo : lo + 1000], webhook_url)
            tokens.extend(batch[: max(0, want_tokens - len(tokens))])
            say(f"members: {min(lo + 1000, len(bodies)):,} inserted")
    finally:
        engine.dispose()
    return tokens, time.perf_counter() - started


@contextmanager
def running_server(env: dict[str, str], log: Path, say: Callable[[str], None]) -> Iterator[str]:
    """`ern serve` on a free loopback port until the block ends (SIGINT, then kill)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ERN, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                msg = f"ern serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                msg = f"ern serve not healthy after 120 s:\n{log.read_text()[-3000:]}"
                raise RuntimeError(msg)
            try:
                if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        say(f"ern serve healthy at {base} (pid {proc.pid})")
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        say(f"ern serve stopped ({proc.returncode})")


def alert_points(graph: Any, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Points scattered (sigma JITTER_M / 2, clipped at JITTER_M) around random graph nodes."""
    nodes = rng.integers(0, graph.n_nodes, n)
    m_per_deg_lat = 111_320.0
    m_per_deg_lon = m_per_deg_lat * math.cos(math.radians(float(graph.lat.mean())))
    dx = np.clip(rng.normal(0, JITTER_M / 2, n), -JITTER_M, JITTER_M)
    dy = np.clip(rng.normal(0, JITTER_M / 2, n), -JITTER_M, JITTER_M)
    lon = graph.lon[nodes] + dx / m_per_deg_lon
    lat = graph.lat[nodes] + dy / m_per_deg_lat
    return [(round(float(x), 7), round(float(y), 7)) for x, y in zip(lon, lat, strict=True)]


def _alert_body(lon: float, lat: float) -> dict[str, Any]:
    return {
        "location": {"type": "Point", "coordinates": [lon, lat]},
        "kind": "personal",
        "needed": NEEDED,
        "note": "load test",
    }


async def fire(
    base: str,
    jobs: list[tuple[str, tuple[float, float]]],
    clients: int,
    *,
    rate_per_s: float | None = None,
) -> tuple[list[float], list[int], list[int | None], float]:
    """Send the alerts from ``clients`` concurrent workers; latency (s), status, notified_count.

    Closed loop by default (each worker sends its next alert when the last is answered).
    With ``rate_per_s``, alert i is due at start + i / rate (open loop) and its latency
    counts from when it was due, so time spent waiting for a free client is included.
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(jobs)):
        queue.put_nowait(i)
    latency = [math.nan] * len(jobs)
    status = [0] * len(jobs)
    notified: list[int | None] = [None] * len(jobs)
    run_id = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                token, (lon, lat) = jobs[i]
                headers = {
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": f"load-{run_id}-{i}",
                }
                t0 = time.perf_counter()
                if rate_per_s is not None:
                    due = started + i / rate_per_s
                    if due > t0:
                        await asyncio.sleep(due - t0)
                    t0 = due
                try:
                    r = await http.post("/v1/alerts", json=_alert_body(lon, lat), headers=headers)
                except httpx.HTTPError:
                    latency[i] = time.perf_counter() - t0
                    status[i] = -1
                    continue
                latency[i] = time.perf_counter() - t0
                status[i] = r.status_code
                if r.status_code == 201:
                    notified[i] = r.json().get("notified_count")

        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return latency, status, notified, wall


def outbox_states(database_url: str) -> dict[str, int]:
    """Outbox rows by state."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
    return {str(s): int(c) for s, c in rows}


def drain(
    database_url: str, sink: Sink, *, timeout_s: float, say: Callable[[str], None]
) -> tuple[dict[str, int], float]:
    """Wait (bounded) until no outbox row is pending or sending; the states and the wait."""
    started = time.monotonic()
    while True:
        states = outbox_states(database_url)
        due = states.get("pending", 0) + states.get("sending", 0)
        waited = time.monotonic() - started
        if due == 0 or waited > timeout_s:
            say(f"outbox after {waited:.1f} s: {states}; sink received {sink.count}")
            return states, waited
        time.sleep(0.5)


def _pcts(seconds: Sequence[float]) -> dict[str, float]:
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
    }


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole load test; returns the figures."""
    from geo.graph import load_graph

    say = bench._say(args.json and args.quiet)
    preset = QUICK if args.quick else FULL
    n_members = args.members or preset["members"]
    n_alerts = args.alerts or preset["alerts"]
    clients = args.clients or preset["clients"]
    source = args.graph_source or str(preset["source"])
    result: dict[str, Any] = {"machine": bench.machine_info()}
    t_all = time.perf_counter()

    graph_dir, name, _ = bench.resolve_graphs(source, quick=args.quick, say=say)
    walk = load_graph(graph_dir, "walk")
    bodies, synth = bench.make_members(walk, n_members, SEED, graph_dir, say)
    per_hour = 10  # ERN_ALERTS_PER_HOUR default; the server runs with it
    n_requesters = min(len(bodies) - 1, max(MIN_REQUESTERS, math.ceil(n_alerts / per_hour)))
    if n_requesters * per_hour < n_alerts:
        need = math.ceil(n_alerts / per_hour)
        msg = f"{n_alerts} alerts need {need} requesters, have {n_requesters}"
        raise SystemExit(msg)
    result["setup"] = {
        "graph": name,
        "graph_dir": str(graph_dir),
        "walk_nodes": walk.n_nodes,
        "walk_edges": walk.n_edges,
        "members": len(bodies),
        "member_modes": dict(Counter(b["mode"] for b in bodies)),
        "member_roles": dict(Counter("+".join(sorted(b["roles"])) or "none" for b in bodies)),
        "members_cached": synth["cached"],
        "requesters": n_requesters,
        "alerts": n_alerts,
        "clients": clients,
        "needed": NEEDED,
        "timezone": TIMEZONE,
    }
    rng = np.random.default_rng(SEED)
    points = alert_points(walk, n_alerts + 2 * WARM_UP_ALERTS, rng)
    modes = ",".join(m for m in ("walk", "bike", "drive") if (graph_dir / f"{m}.npz").is_file())

    sink = Sink()
    try:
        with fresh_database(say) as (database_url, db_name), tempfile.TemporaryDirectory() as tmp:
            result["setup"]["database"] = db_name
            env = server_env(database_url, graph_dir, Path(tmp) / "var", modes)
            env.update(dict(kv.split("=", 1) for kv in args.server_env))
            result["setup"]["server_env_extra"] = args.server_env
            t0 = time.perf_counter()
            done = subprocess.run(
                [ERN, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                msg = f"ern db upgrade failed:\n{done.stdout}\n{done.stderr}"
                raise RuntimeError(msg)
            result["setup"]["db_upgrade_s"] = time.perf_counter() - t0
            if args.log_min_duration_ms is not None:
                _log_slow_statements(db_name, args.log_min_duration_ms)
            # requesters first, then one member for the warm-up alerts
            tokens, load_s = load_members(
                database_url, bodies, webhook_url=sink.url, want_tokens=n_requesters + 1, say=say
            )
            result["setup"]["member_insert_s"] = load_s
            result["setup"]["member_insert_per_s"] = len(bodies) / load_s
            warm_token = tokens.pop()
            jobs = [(tokens[i % n_requesters], points[i]) for i in range(n_alerts)]
            warm_jobs = [(warm_token, p) for p in points[n_alerts : n_alerts + WARM_UP_ALERTS]]

            t0 = time.perf_counter()
            with running_server(env, Path(tmp) / "serve.log", say) as base:
                result["setup"]["server_ready_s"] = time.perf_counter() - t0
                # warm-up, not counted: one at a time, then all at once (pool, kernels, index)
                warm = asyncio.run(fire(base, warm_jobs[:3], 1))
                warm2 = asyncio.run(fire(base, warm_jobs[3:], min(clients, 5)))
                warm_status = Counter(warm[1] + warm2[1])
                result["warm_up"] = {
                    "alerts": len(warm_jobs),
                    "status": {str(k): v for k, v in warm_status.items()},
                    "first_ms": warm[0][0] * 1e3,
                }
                say(f"warm-up: {dict(warm_status)}, first {warm[0][0] * 1e3:.1f} ms")
                sink_before = sink.count
                say(f"firing {n_alerts:,} alerts from {clients} clients")
                latency, status, notified, wall = asyncio.run(
                    fire(base, jobs, clients, rate_per_s=args.rate)
                )
                ok = [n for n, s in zip(notified, status, strict=True) if s == 201]
                result["requests"] = len(latency)
                result["alerts"] = n_alerts
                result["clients"] = clients
                result["rate_per_s"] = args.rate
                result.update(_pcts(latency))
                result["errors"] = sum(1 for s in status if s != 201)
                result["status"] = {str(k): v for k, v in sorted(Counter(status).items())}
                result["wall_s"] = wall
                result["throughput_per_s"] = len(latency) / wall
                counts = np.asarray([n for n in ok if n is not None], dtype=np.int64)
                result["notified_count"] = {
                    "histogram": {str(k): v for k, v in sorted(Counter(counts.tolist()).items())},
                    "mean": float(counts.mean()) if counts.size else None,
                    "total": int(counts.sum()),
                }
                say(
                    f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                    f"errors {result['errors']}, {result['throughput_per_s']:.0f}/s"
                )
                states, waited = drain(database_url, sink, timeout_s=args.drain_s, say=say)
                result["deliveries"] = {
                    "outbox_states": states,
                    "sink_received": sink.count,
                    "sink_received_from_measured": sink.count - sink_before,
                    "expected_from_measured": int(counts.sum()),
                    "drain_wait_s": waited,
                }
                result["loadavg_at_end"] = list(os.getloadavg())
            log_text = (Path(tmp) / "serve.log").read_text(errors="replace")
            result["server_log_tracebacks"] = log_text.count("Traceback")
    finally:
        sink.close()
    result["total_s"] = time.perf_counter() - t_all
    return result


def render(r: dict[str, Any]) -> str:
    """Human-readable summary."""
    s, m = r["setup"], r["machine"]
    d = r["deliveries"]
    return "\n".join(
        [
            f"graph {s['graph']} (walk {s['walk_nodes']:,} nodes), {s['members']:,} members "
            f"{s['member_modes']}, {s['requesters']} requesters",
            f"machine: {m['cpu']}, {m['cores']} cores, load at start {m['loadavg_at_start']}",
            f"members inserted in {s['member_insert_s']:.1f} s ({s['member_insert_per_s']:.0f}/s)",
            f"POST /v1/alerts x {r['requests']:,}, {r['clients']} clients"
            + (f" at {r['rate_per_s']:g}/s: " if r["rate_per_s"] else ": ")
            + f"p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"max {r['max_ms']:.1f} ms, errors {r['errors']} {r['status']}",
            f"throughput {r['throughput_per_s']:.1f} alerts/s over {r['wall_s']:.1f} s",
            f"notified_count {r['notified_count']['histogram']} "
            f"(total {r['notified_count']['total']})",
            f"outbox {d['outbox_states']}, sink received {d['sink_received']} "
            f"({d['sink_received_from_measured']} from the measured alerts, "
            f"{d['expected_from_measured']} expected) after {d['drain_wait_s']:.1f} s",
            f"load at end {r['loadavg_at_end']}, total {r['total_s']:.0f} s",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--graph-source", help="OSM extract or compiled graph dir (default: Porto)")
    p.add_argument("--members", type=int, help="synthetic members (default 10,000; quick 1,000)")
    p.add_argument("--alerts", type=int, help="measured alerts (default 2,000; quick 200)")
    p.add_argument("--clients", type=int, help="concurrent clients (default 32; quick 8)")
    p.add_argument(
        "--quick", action="store_true", help="Monaco, 1,000 members, 200 alerts, 8 clients"
    )
    p.add_argument("--drain-s", type=float, default=120.0, help="max wait for the outbox to empty")
    p.add_argument(
        "--log-min-duration-ms",
        type=int,
        help="diagnosis: the PostgreSQL server logs this database's statements slower than this",
    )
    p.add_argument(
        "--rate",
        type=float,
        help="open loop: alerts per second (latency counted from when each was due); "
        "default closed loop",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnosis: extra environment of ern serve, e.g. ERN_RUN_WORKERS=false (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (with --json)")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
