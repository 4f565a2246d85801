#!/usr/bin/env python
"""End-to-end load test of POST /v1/alerts: a running `ern serve`, PostGIS, synthetic members.

Usage::

    python scripts/loadtest.py [--graph-source PATH] [--members N] [--alerts N] [--clients N]
                               [--server-workers N] [--outbox-process] [--server-nice N]
                               [--servers N] [--outbox-workers M] [--rate R]
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
   member's contact is a webhook to a local sink (an asyncio HTTP/1.1 keep-alive server in
   its own process) that answers 200 and counts messages by alert (X-Ern-Delivery), so
   notifications go through the real outbox workers.
4. ``ern serve --no-access-log`` (``--server-workers`` uvicorn processes, default one, and
   the worker process it starts; with ``--outbox-process`` its workers are off and the script
   starts one ``ern worker`` itself) as a subprocess; the script waits for /healthz, every
   process's start-up and the worker's, then sends warm-up alerts that are not counted.
   ``--servers N`` starts N such ``ern serve`` processes, each on its own port, and spreads
   the requests over them round robin (as a load balancer in front of N machines would);
   ``--outbox-workers M`` turns their workers off and starts M ``ern worker`` processes.
5. ``--alerts`` personal alerts (needed 3) from ``--clients`` concurrent clients, each from
   one of >= 250 requesters (the rate limit is ERN_ALERTS_PER_HOUR per member), each with
   its own Idempotency-Key, at a point within ~50 m of a random walk-graph node. A client
   is one keep-alive connection speaking minimal HTTP/1.1 over asyncio streams (the load
   generator shares the CPUs with the server, so it must cost little). Latency is the
   client-side wall time per request.
6. Messages the sink got for the measured alerts are counted after the outbox had up to
   ``--drain-s`` seconds to empty and compared, alert by alert, with each answer's
   notified_count; then the servers are stopped and the database dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager, redirect_stdout, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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
SERVER_START_S = 120.0
T = TypeVar("T")

FULL: dict[str, Any] = {
    "members": 10_000, "alerts": 2_000, "clients": 32, "source": bench.DEFAULT_SOURCE
}  # fmt: skip
QUICK: dict[str, Any] = {
    "members": 1_000, "alerts": 200, "clients": 8, "source": bench.QUICK_SOURCE
}  # fmt: skip


# --------------------------------------------------------------------------- pieces


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (a leaner loop), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class Sink:
    """A webhook receiver on 127.0.0.1 in its own process: answers 200, counts by alert."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_sink_main, args=(child,), name="loadtest-sink", daemon=True
        )
        self.process.start()
        child.close()
        if not self._conn.poll(60):
            self.process.kill()
            msg = "the webhook sink did not start in 60 s"
            raise RuntimeError(msg)
        port = int(self._conn.recv())
        self.url = f"http://127.0.0.1:{port}/hook"

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        """Messages received so far: by alert id and by message kind."""
        by_alert, by_kind = self._ask("counts")
        return Counter(by_alert), Counter(by_kind)

    def arrivals(self) -> dict[str, list[float]]:
        """time.monotonic() of each message received so far, by alert id (one clock for all
        processes of the machine)."""
        arrivals: dict[str, list[float]] = self._ask("arrivals")
        return arrivals

    def duplicates(self) -> dict[str, int]:
        """Delivery ids received more than once, with how often."""
        dupes: dict[str, int] = self._ask("duplicates")
        return dupes

    def _ask(self, what: str) -> Any:
        self._conn.send(what)
        if not self._conn.poll(60):
            msg = f"the webhook sink did not answer {what!r} in 60 s"
            raise RuntimeError(msg)
        return self._conn.recv()

    @property
    def count(self) -> int:
        """Messages received so far."""
        return sum(self.counts()[1].values())

    def close(self) -> None:
        with suppress(OSError):
            self._conn.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._conn.close()


def _sink_main(conn: Connection) -> None:
    """The sink process: serve until the parent says stop, answering count requests."""
    run_async(_sink_serve(conn))


async def _sink_serve(conn: Connection) -> None:
    # X-Ern-Delivery is f"{alert_id}:{member_id}:{channel}:{kind}": attribution by header alone
    by_alert: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    by_delivery: Counter[bytes] = Counter()  # the delivery id: a repeat is a duplicate
    arrivals: defaultdict[str, list[float]] = defaultdict(list)
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, delivery, close = 0, b"", False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-ern-delivery":
                        delivery = value.strip()
                    elif name == b"connection":
                        close = value.strip().lower() == b"close"
                if length:
                    await reader.readexactly(length)
                parts = delivery.decode().split(":")
                arrivals[parts[0]].append(time.monotonic())
                by_alert[parts[0]] += 1
                by_kind[parts[-1]] += 1
                by_delivery[delivery] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def reply(answer: object) -> None:
        # The event loop made the pipe non-blocking: an answer larger than the pipe's
        # buffer (the arrivals of a full run are) would fail half-written.
        os.set_blocking(conn.fileno(), True)
        try:
            conn.send(answer)
        finally:
            os.set_blocking(conn.fileno(), False)

    def command() -> None:
        try:
            what = conn.recv()
        except EOFError:
            what = "stop"
        if what == "stop":
            stop.set()
        elif what == "arrivals":
            reply(dict(arrivals))
        elif what == "duplicates":
            reply({d.decode(): n for d, n in by_delivery.items() if n > 1})
        else:
            reply((dict(by_alert), dict(by_kind)))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), command)
    conn.send(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
    loop.remove_reader(conn.fileno())


class HttpConnection:
    """One HTTP/1.1 keep-alive connection to the server; reopened when the server closes it.

    Just enough HTTP for the load: a hand-formatted request with Content-Length, the
    status line, headers and a Content-Length (or chunked) body read back.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.last_head = b""

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], *, method: str = "POST"
    ) -> tuple[int, bytes]:
        """POST (or ``method``) ``body`` (JSON); the status and the response body. The answer's
        raw header block stays in ``last_head``."""
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{lines}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        reused = self._writer is not None
        try:
            return await self._exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.close()
            partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            if not reused or partial:
                raise
        # The server closed an idle keep-alive connection: once more on a new one (the
        # Idempotency-Key makes a repeat of a request it did process a replay, not an alert).
        return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        self.last_head = head
        status_line, *header_lines = head[:-4].split(b"\r\n")
        status = int(status_line.split(None, 2)[1])
        length: int | None = None
        chunked = close = False
        for line in header_lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            body = await _read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body, close = await reader.read(), True
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from our server
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


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
        ERN_WEBHOOK_ALLOW_PRIVATE="true",  # the sink listens on 127.0.0.1
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


def _stop(proc: subprocess.Popen[bytes], name: str, say: Callable[[str], None]) -> None:
    """SIGINT, then kill after 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    say(f"{name} stopped ({proc.returncode})")


@contextmanager
def running_server(
    env: dict[str, str],
    log: Path,
    say: Callable[[str], None],
    *,
    workers: int = 1,
    access_log: bool = False,
    nice: int = 0,
) -> Iterator[str]:
    """`ern serve` on a free loopback port until the block ends (SIGINT, then kill).

    Ready when /healthz answers 200, each of the ``workers`` processes finished start-up
    (a process still loading graphs would otherwise take its first alerts in the measure) and,
    when ``env`` leaves ern serve its worker process, that worker is delivering.
    """
    child_worker = _env_on(env, "ERN_RUN_WORKERS") and _env_on(env, "ERN_WORKER_PROCESS")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [ERN, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    cmd.append("--access-log" if access_log else "--no-access-log")
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]  # nice execs ern: the same pid gets SIGINT
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                msg = f"ern serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                msg = f"ern serve not ready in {SERVER_START_S:.0f} s:\n{log.read_text()[-3000:]}"
                raise RuntimeError(msg)
            text = log.read_text(errors="replace")
            started = text.count("Application startup complete")
            delivering = not child_worker or "delivering notifications" in text
            try:
                healthy = httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if healthy and started >= workers and delivering:
                break
            time.sleep(0.25)
        if nice and os.getpriority(os.PRIO_PROCESS, proc.pid) != nice:
            msg = f"ern serve runs at niceness {os.getpriority(os.PRIO_PROCESS, proc.pid)}"
            raise RuntimeError(msg)
        say(f"ern serve healthy at {base} (pid {proc.pid}, --workers {workers}, nice {nice})")
        yield base
    finally:
        _stop(proc, "ern serve", say)


def _env_on(env: dict[str, str], name: str) -> bool:
    """A boolean ERN_ setting as pydantic reads it; unset is on (both defaults are true)."""
    return env.get(name, "true").lower() not in {"false", "0", "no", "off", "f", "n"}


@contextmanager
def running_worker(env: dict[str, str], log: Path, say: Callable[[str], None]) -> Iterator[None]:
    """`ern worker` (outbox delivery and escalation) until the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen([ERN, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while "delivering notifications" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                msg = f"ern worker did not start ({proc.returncode}):\n{log.read_text()[-3000:]}"
                raise RuntimeError(msg)
            time.sleep(0.25)
        say(f"ern worker running (pid {proc.pid})")
        yield
    finally:
        _stop(proc, "ern worker", say)


# --- CPU per alert ------------------------------------------------------------------------

CPU_PARTS = ("server", "worker", "postgres", "sink", "load generator")


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process: pid -> (parent pid, command line, CPU seconds so far: user + system)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        if not command:  # kernel threads
            command = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[int(entry)] = (int(fields[1]), command, (int(fields[11]) + int(fields[12])) / ticks)
    return out


def cpu_parts(sink_pid: int | None) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of the processes taking part, by pid, with their part.

    Of the script's own descendants: `ern serve` and the uvicorn processes it spawned
    ("server"), any `ern worker`, also the one ern serve starts ("worker"), the sink; the
    script itself ("load generator"); every PostgreSQL process of the machine ("postgres":
    backends, WAL writer, checkpointer). Empty where there is no /proc.
    """
    if not Path("/proc/self/stat").is_file():
        return {}
    procs = _processes()
    me = os.getpid()

    def part(pid: int) -> str | None:
        command = procs[pid][1]
        if pid == me:
            return "load generator"
        if pid == sink_pid:
            return "sink"
        program = command.split(" ", 1)[0]
        if program.startswith("postgres") or program.endswith("/postgres"):
            return "postgres"
        # ours: a descendant of this script (ern serve, its children, an ern worker)
        lineage, chain = [], pid
        while chain in procs and chain != me and len(lineage) < 64:
            lineage.append(procs[chain][1])
            chain = procs[chain][0]
        if chain != me:
            return None
        if " worker" in command:
            return "worker"
        return "server" if any(" serve " in f"{c} " for c in lineage) else None

    taken: dict[int, tuple[str, float]] = {}
    for pid, (_, _, cpu_s) in procs.items():
        name = part(pid)
        if name is not None:
            taken[pid] = (name, cpu_s)
    return taken


def cpu_per_alert(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    *,
    wall_s: float,
    alerts: int,
) -> dict[str, Any] | None:
    """CPU each part spent between two cpu_parts() snapshots, per alert and in all.

    A process that started in between counts from zero; one that ended in between is lost
    (e.g. a database connection closed during the run).
    """
    if not after or alerts == 0 or wall_s <= 0:
        return None
    seconds = dict.fromkeys(CPU_PARTS, 0.0)
    for pid, (name, cpu_s) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        seconds[name] += max(0.0, cpu_s - start)
    total = sum(seconds.values())
    return {
        "window_s": wall_s,
        "seconds": seconds,
        "per_alert_ms": {
            **{k: 1e3 * v / alerts for k, v in seconds.items()},
            "total": 1e3 * total / alerts,
        },
        "cores_used": total / wall_s,
        # processes of each part that ran in the window (e.g. 2 x ern worker)
        "processes": dict(Counter(name for name, _ in after.values())),
    }


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


class Fired(NamedTuple):
    """What a batch of alerts got: per request latency (s), status, notified_count, alert id,
    and when (time.monotonic()) each answer arrived."""

    latency: list[float]
    status: list[int]
    notified: list[int | None]
    alert_ids: list[str | None]
    answered_at: list[float]
    wall_s: float


async def fire(
    base: str | Sequence[str],
    jobs: list[tuple[str, tuple[float, float]]],
    clients: int,
    *,
    rate_per_s: float | None = None,
) -> Fired:
    """Send the alerts from ``clients`` concurrent clients.

    Closed loop by default (each client sends its next alert when the last is answered).
    With ``rate_per_s``, alert i is due at start + i / rate (open loop) and its latency
    counts from when it was due, so time spent waiting for a free client is included.
    With several ``base`` URLs (separate servers), alert i goes to server i mod N, round
    robin as a load balancer spreads requests; a client keeps one keep-alive connection per
    server. Status -1: no answer (connection error or REQUEST_TIMEOUT_S).
    """
    bases = [base] if isinstance(base, str) else list(base)
    addresses = [b.removeprefix("http://").rsplit(":", 1) for b in bases]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(jobs)):
        queue.put_nowait(i)
    fired = Fired([math.nan] * len(jobs), [0] * len(jobs), [None] * len(jobs),
                  [None] * len(jobs), [math.nan] * len(jobs), 0.0)  # fmt: skip
    run_id = uuid.uuid4().hex[:8]
    started = time.perf_counter()

    async def client() -> None:
        connections = [HttpConnection(host, int(port)) for host, port in addresses]
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                http = connections[i % len(connections)]
                token, (lon, lat) = jobs[i]
                headers = {
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": f"load-{run_id}-{i}",
                }
                body = json.dumps(_alert_body(lon, lat)).encode()
                t0 = time.perf_counter()
                if rate_per_s is not None:
                    due = started + i / rate_per_s
                    if due > t0:
                        await asyncio.sleep(due - t0)
                    t0 = due
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        status, answer = await http.post("/v1/alerts", body, headers)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        TimeoutError, ValueError):  # fmt: skip
                    fired.latency[i] = time.perf_counter() - t0
                    fired.status[i] = -1
                    http.close()
                    continue
                fired.latency[i] = time.perf_counter() - t0
                fired.answered_at[i] = time.monotonic()
                fired.status[i] = status
                if status == 201:
                    alert = json.loads(answer)
                    fired.notified[i] = alert.get("notified_count")
                    fired.alert_ids[i] = alert.get("id")
        finally:
            for http in connections:
                http.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return fired._replace(wall_s=time.perf_counter() - started)


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


def deliveries(
    fired: Fired,
    by_alert: Counter[str],
    by_kind: Counter[str],
    at_start: Counter[str],
    warm_ids: set[str],
) -> dict[str, Any]:
    """What the sink got, attributed by alert id: measured alerts against their notified_count.

    Warm-up alerts are still being delivered when the measured ones start; a count taken at
    that moment would give their late messages to the measured alerts.
    """
    measured = {a: n for a, n in zip(fired.alert_ids, fired.notified, strict=True) if a is not None}
    expected = sum(n or 0 for n in measured.values())
    return {
        "sink_received": sum(by_alert.values()),
        "sink_received_from_measured": sum(by_alert[a] for a in measured),
        "expected_from_measured": expected,
        "measured_alerts_short": sum(1 for a, n in measured.items() if by_alert[a] < (n or 0)),
        "measured_alerts_over": sum(1 for a, n in measured.items() if by_alert[a] > (n or 0)),
        "sink_received_from_warm_up": sum(by_alert[a] for a in warm_ids),
        "warm_up_received_after_start": sum(by_alert[a] - at_start[a] for a in warm_ids),
        "sink_by_kind": dict(sorted(by_kind.items())),
    }


def notification_latency(fired: Fired, arrivals: dict[str, list[float]]) -> dict[str, Any]:
    """How long after its 201 each measured alert's notifications reached the sink.

    ``message``: every message; ``alert_complete``: the last message of each alert whose
    first wave fully arrived. Negative values are messages that beat the 201 to the client.
    """
    per_message: list[float] = []
    complete: list[float] = []
    for alert_id, notified, answered_at in zip(
        fired.alert_ids, fired.notified, fired.answered_at, strict=True
    ):
        times = arrivals.get(alert_id or "", [])
        if alert_id is None or not times:
            continue
        per_message.extend(t - answered_at for t in times)
        if len(times) >= (notified or 0):
            complete.append(max(times) - answered_at)
    return {
        "message": _pcts(per_message) if per_message else None,
        "alert_complete": _pcts(complete) if complete else None,
        "messages": len(per_message),
        "alerts_complete": len(complete),
    }


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
    workers = args.server_workers
    servers = args.servers
    outbox_workers = max(args.outbox_workers, 1 if args.outbox_process else 0)
    processes = servers * workers  # uvicorn processes in all
    per_hour = 10  # ERN_ALERTS_PER_HOUR default; the server runs with it
    # WARM_UP_ALERTS per server process, each batch from its own member (the rate limit)
    n_warm = WARM_UP_ALERTS * processes
    n_requesters = min(len(bodies) - processes, max(MIN_REQUESTERS, math.ceil(n_alerts / per_hour)))
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
        "server_workers": workers,
        "servers": servers,
        "outbox_workers": outbox_workers,
        "outbox_process": outbox_workers > 0,
        "server_nice": args.server_nice,
        "server_access_log": args.server_access_log,
        "load_client": "asyncio streams, HTTP/1.1 keep-alive, one connection per client",
        "sink": "asyncio HTTP/1.1 keep-alive server in its own process",
    }
    rng = np.random.default_rng(SEED)
    # as many points as before for one or two processes: the measured points stay the same
    points = alert_points(walk, n_alerts + max(2 * WARM_UP_ALERTS, n_warm), rng)
    modes = ",".join(m for m in ("walk", "bike", "drive") if (graph_dir / f"{m}.json").is_file())

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
            # requesters first, then one member per server process for the warm-up alerts
            tokens, load_s = load_members(
                database_url,
                bodies,
                webhook_url=sink.url,
                want_tokens=n_requesters + processes,
                say=say,
            )
            result["setup"]["member_insert_s"] = load_s
            result["setup"]["member_insert_per_s"] = len(bodies) / load_s
            jobs = [(tokens[i % n_requesters], points[i]) for i in range(n_alerts)]
            warm_jobs = [
                (tokens[n_requesters + i // WARM_UP_ALERTS], points[n_alerts + i])
                for i in range(n_warm)
            ]
            logs: list[Path] = []
            serve_env = env
            t0 = time.perf_counter()
            with ExitStack() as running:
                if outbox_workers:
                    serve_env = {**env, "ERN_RUN_WORKERS": "false"}
                    for w in range(outbox_workers):
                        logs.append(Path(tmp) / f"worker-{w}.log")
                        running.enter_context(running_worker(env, logs[-1], say))
                bases: list[str] = []
                for k in range(servers):  # each its own process and port, like separate machines
                    logs.append(Path(tmp) / f"serve-{k}.log")
                    server = running_server(
                        serve_env,
                        logs[-1],
                        say,
                        workers=workers,
                        access_log=args.server_access_log,
                        nice=args.server_nice,
                    )
                    bases.append(running.enter_context(server))
                result["setup"]["server_ready_s"] = time.perf_counter() - t0
                # warm-up, not counted: a few at a time, then all at once (pool, kernels, index)
                first = 3 * processes
                warm = run_async(fire(bases, warm_jobs[:first], processes))
                warm2 = run_async(fire(bases, warm_jobs[first:], min(clients, 5 * processes)))
                warm_status = Counter(warm.status + warm2.status)
                warm_ids = {a for a in warm.alert_ids + warm2.alert_ids if a is not None}
                result["warm_up"] = {
                    "alerts": len(warm_jobs),
                    "status": {str(k): v for k, v in warm_status.items()},
                    "first_ms": warm.latency[0] * 1e3,
                }
                say(f"warm-up: {dict(warm_status)}, first {warm.latency[0] * 1e3:.1f} ms")
                at_start, _ = sink.counts()
                say(f"firing {n_alerts:,} alerts from {clients} clients")
                cpu_before = cpu_parts(sink.process.pid)
                fired = run_async(fire(bases, jobs, clients, rate_per_s=args.rate))
                result["cpu"] = cpu_per_alert(
                    cpu_before, cpu_parts(sink.process.pid), wall_s=fired.wall_s, alerts=n_alerts
                )
                latency, status = fired.latency, fired.status
                ok = [n for n, s in zip(fired.notified, status, strict=True) if s == 201]
                result["requests"] = len(latency)
                result["alerts"] = n_alerts
                result["clients"] = clients
                result["rate_per_s"] = args.rate
                result.update(_pcts(latency))
                result["errors"] = sum(1 for s in status if s != 201)
                result["status"] = {str(k): v for k, v in sorted(Counter(status).items())}
                # which server answered each 201 (alert i went to server i mod N)
                result["created_by_server"] = [
                    sum(1 for i, s in enumerate(status) if s == 201 and i % servers == k)
                    for k in range(servers)
                ]
                result["wall_s"] = fired.wall_s
                result["throughput_per_s"] = len(latency) / fired.wall_s
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
                by_alert, by_kind = sink.counts()
                result["deliveries"] = deliveries(fired, by_alert, by_kind, at_start, warm_ids)
                dupes = sink.duplicates()  # a delivery id received twice, warm-up included
                result["deliveries"]["duplicate_deliveries"] = sum(n - 1 for n in dupes.values())
                result["deliveries"].update(outbox_states=states, drain_wait_s=waited)
                result["notification_latency"] = arrival = notification_latency(
                    fired, sink.arrivals()
                )
                if arrival["alert_complete"] is not None:
                    say(
                        "notifications after the 201: message p50 "
                        f"{arrival['message']['p50_ms']:.0f} ms / p99 "
                        f"{arrival['message']['p99_ms']:.0f} ms; whole first wave p50 "
                        f"{arrival['alert_complete']['p50_ms']:.0f} ms / p99 "
                        f"{arrival['alert_complete']['p99_ms']:.0f} ms"
                    )
                result["loadavg_at_end"] = list(os.getloadavg())
            texts = [log.read_text(errors="replace") for log in logs]
            result["server_log_tracebacks"] = sum(text.count("Traceback") for text in texts)
            if result["server_log_tracebacks"]:
                # The logs go with the temporary directory: keep the first traceback's story.
                text = next(text for text in texts if "Traceback" in text)
                start = text.rfind("\n", 0, max(0, text.index("Traceback") - 1)) + 1
                result["server_log_first_traceback"] = text[start : start + 4000]
                say("server log traceback:\n" + result["server_log_first_traceback"])
    finally:
        sink.close()
    result["total_s"] = time.perf_counter() - t_all
    return result


# --------------------------------------------------------------------------- database restart


@contextmanager
def embedded_database(say: Callable[[str], None]) -> Iterator[tuple[str, Any]]:
    """A private PostgreSQL cluster (api.embedded) in a temporary directory, for restarting.

    It listens on a Unix socket in its own directory only (no TCP port), so the shared test
    server is never touched; it is stopped and removed on the way out.
    """
    import shutil

    from api.embedded import EmbeddedCluster

    root = Path(tempfile.mkdtemp(prefix="ern-load-pg-"))
    root.chmod(0o755)  # the cluster runs as the postgres user when we are root
    cluster = EmbeddedCluster(root)
    try:
        with redirect_stdout(sys.stderr):  # its progress lines must not mix with --json
            url = cluster.start(install=False)
        say(f"embedded PostgreSQL cluster in {root}")
        yield url, cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
        say("embedded cluster stopped and removed")


class Answer(NamedTuple):
    """One request of the mixed load: what it was, when it was due (s after the start), what
    it got."""

    kind: str  # "alert" or "update"
    due_s: float
    latency_s: float
    status: int  # -1: no answer
    error: str | None
    retry_after: bool
    alert_id: str | None
    notified: int | None
    key: str | None  # the alert's Idempotency-Key


async def fire_mixed(
    bases: Sequence[str],
    alerts: list[tuple[str, tuple[float, float]]],
    updaters: list[str],
    *,
    rate_per_s: float,
    clients: int,
    on_start: Callable[[float], None] | None = None,
) -> tuple[list[Answer], float]:
    """Alerts at ``rate_per_s`` and as many `PATCH /v1/members/me` in between, open loop.

    Request i is due at start + i / (2 * rate); latency counts from then. No retries: an
    error is recorded as it came (the point is to see what a client sees).
    """
    jobs: list[tuple[str, int]] = []
    for i in range(len(alerts)):
        jobs.append(("alert", i))
        jobs.append(("update", i))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for j in range(len(jobs)):
        queue.put_nowait(j)
    answers: list[Answer | None] = [None] * len(jobs)
    run_id = uuid.uuid4().hex[:8]
    step_s = 1.0 / (2 * rate_per_s)
    started = time.perf_counter()
    if on_start is not None:
        on_start(started)

    async def client(k: int) -> None:
        host, port = bases[k % len(bases)].removeprefix("http://").rsplit(":", 1)
        http = HttpConnection(host, int(port))
        try:
            while True:
                try:
                    j = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                kind, i = jobs[j]
                due = started + j * step_s
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                key = None
                if kind == "alert":
                    token, (lon, lat) = alerts[i]
                    key = f"restart-{run_id}-{i}"
                    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
                    body = json.dumps(_alert_body(lon, lat)).encode()
                    method, path = "POST", "/v1/alerts"
                else:
                    token = updaters[i % len(updaters)]
                    headers = {"Authorization": f"Bearer {token}"}
                    body = json.dumps({"available": (i // len(updaters)) % 2 == 1}).encode()
                    method, path = "PATCH", "/v1/members/me"
                status, answer, head = -1, b"", b""
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        status, answer = await http.post(path, body, headers, method=method)
                    head = http.last_head
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        TimeoutError, ValueError):  # fmt: skip
                    http.close()
                latency = time.perf_counter() - due
                data: dict[str, Any] = {}
                with suppress(ValueError):
                    data = json.loads(answer) if answer else {}
                ok = status in (200, 201)
                answers[j] = Answer(
                    kind, due - started, latency, status,
                    None if ok else str(data.get("error", "no answer")),
                    b"\r\nretry-after:" in head.lower(),
                    data.get("id") if kind == "alert" and status == 201 else None,
                    data.get("notified_count") if kind == "alert" and status == 201 else None,
                    key,
                )  # fmt: skip
        finally:
            http.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    done = [a for a in answers if a is not None]
    return done, time.perf_counter() - started


async def _poll_health(
    base: str, until: asyncio.Event, started: float
) -> list[tuple[float, int, str]]:
    """/healthz every 0.2 s: (s after the start, status, its "database" field)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    http = HttpConnection(host, int(port))
    seen: list[tuple[float, int, str]] = []
    while not until.is_set():
        t = time.perf_counter() - started
        try:
            async with asyncio.timeout(5):
                status, body = await http.post("/healthz", b"", {}, method="GET")
            database = str(json.loads(body).get("database"))
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            http.close()
            status, database = -1, "no answer"
        seen.append((t, status, database))
        with suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), 0.2)
    http.close()
    return seen


def _restart_cluster(cluster: Any, down_s: float, started: float) -> dict[str, float]:
    """Immediate shutdown (a crash for the data), ``down_s`` away, start; times after start."""
    t_stop = time.perf_counter() - started
    cluster.stop(mode="immediate")
    t_down = time.perf_counter() - started
    time.sleep(down_s)
    with redirect_stdout(sys.stderr):
        cluster.start(install=False)
    return {"stop_at_s": t_stop, "down_at_s": t_down, "up_at_s": time.perf_counter() - started}


def _written(database_url: str, keys: Sequence[str]) -> dict[str, tuple[str, int, int, int]]:
    """Alerts of these Idempotency-Keys in the database: key -> (id, responders notified,
    outbox rows, outbox rows sent)."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT a.idempotency_key, a.id::text,
                   (SELECT count(*) FROM alert_responder r
                     WHERE r.alert_id = a.id AND r.notified_at IS NOT NULL),
                   (SELECT count(*) FROM outbox o WHERE o.alert_id = a.id),
                   (SELECT count(*) FROM outbox o WHERE o.alert_id = a.id AND o.state = 'sent')
            FROM alert a WHERE a.idempotency_key = ANY(%s)
            """,
            (list(keys),),
        ).fetchall()
    return {str(k): (str(i), int(r), int(o), int(s)) for k, i, r, o, s in rows}


def _window(answers: Sequence[Answer], lo: float, hi: float) -> dict[str, Any]:
    inside = [a for a in answers if lo <= a.due_s < hi]
    ok = [a.latency_s for a in inside if a.status in (200, 201)]
    return {
        "from_s": lo,
        "to_s": hi if math.isfinite(hi) else None,
        "requests": len(inside),
        "status": {str(k): v for k, v in sorted(Counter(a.status for a in inside).items())},
        "all": _pcts([a.latency_s for a in inside]) if inside else None,
        "ok": _pcts(ok) if ok else None,
    }


def restart_report(
    answers: Sequence[Answer],
    health: Sequence[tuple[float, int, str]],
    restart: dict[str, float],
    written: dict[str, tuple[str, int, int, int]],
    sink_by_alert: Counter[str],
    duplicates: dict[str, int],
    wall_s: float,
    rate: float,
) -> dict[str, Any]:
    """The figures and the checks of a restart run (pure: tested on its own)."""
    statuses = Counter(a.status for a in answers)
    failed = [a for a in answers if a.status not in (200, 201)]
    unavailable = [a for a in answers if a.status == 503]
    answered = [a.due_s + a.latency_s for a in unavailable]
    created = [a for a in answers if a.kind == "alert" and a.status == 201]
    errored_alerts = [a for a in answers if a.kind == "alert" and a.status != 201]
    missing = [a.key for a in created if a.key not in written]
    delivered_short = sum(1 for a in created if sink_by_alert[a.alert_id or ""] < (a.notified or 0))
    delivered_over = sum(1 for a in created if sink_by_alert[a.alert_id or ""] > (a.notified or 0))
    half = [
        k
        for k, (_, responders, outbox, _) in written.items()
        if outbox != responders  # an alert without its notifications, or the reverse
    ]
    unsent = sum(o - s for _, _, o, s in written.values())
    up = restart["up_at_s"]
    errors_after_up = [a.due_s + a.latency_s - up for a in failed if a.due_s + a.latency_s > up]
    down_health = [(t, st, db) for t, st, db in health if st != 200]
    return {
        "rate_per_s": rate,
        "requests": len(answers),
        "requests_per_s_held": len(answers) / wall_s,
        "wall_s": wall_s,
        "restart": restart,
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx_not_503": sum(1 for a in answers if a.status >= 500 and a.status != 503),
        "no_answer": statuses.get(-1, 0),
        "unavailable_503": len(unavailable),
        "unavailable_503_with_retry_after": sum(1 for a in unavailable if a.retry_after),
        "unavailable_503_errors": dict(Counter(a.error or "" for a in unavailable)),
        "seconds_of_503": (max(answered) - min(answered)) if answered else 0.0,
        "first_503_at_s": min(answered) if answered else None,
        "last_error_after_db_up_s": max(errors_after_up) if errors_after_up else 0.0,
        "windows": {
            "before": _window(answers, 0.0, restart["stop_at_s"]),
            "around": _window(answers, restart["stop_at_s"] - 1.0, up + 2.0),
            "after": _window(answers, up + 2.0, math.inf),
        },
        "healthz_not_ok": len(down_health),
        "healthz_reasons": dict(Counter(db for _, _, db in down_health)),
        "alerts_created": len(created),
        "alerts_created_missing_in_db": len(missing),
        "alerts_errored": len(errored_alerts),
        "alerts_errored_but_written": sum(1 for a in errored_alerts if a.key in written),
        "alerts_half_written": len(half),
        "notifications_expected": sum(a.notified or 0 for a in created),
        "notifications_received": sum(sink_by_alert[a.alert_id or ""] for a in created),
        "alerts_short_of_notifications": delivered_short,
        "alerts_over_notifications": delivered_over,
        "outbox_unsent": unsent,
        "duplicate_deliveries": sum(n - 1 for n in duplicates.values()),
        "updates_ok": sum(1 for a in answers if a.kind == "update" and a.status == 200),
    }


def run_restart(args: argparse.Namespace) -> dict[str, Any]:
    """Mixed open-loop load while the (embedded) database restarts; see restart_report."""
    from geo.graph import load_graph

    say = bench._say(args.json and args.quiet)
    source = args.graph_source or str(QUICK["source"] if args.quick else FULL["source"])
    duration_s = args.duration_s or max(3 * args.restart_db_at, args.restart_db_at + 20)
    n_alerts = max(1, round(args.rate * duration_s))
    n_members = args.members or QUICK["members"]
    clients = args.clients or 32
    result: dict[str, Any] = {"machine": bench.machine_info()}
    graph_dir, name, _ = bench.resolve_graphs(source, quick=args.quick, say=say)
    walk = load_graph(graph_dir, "walk")
    bodies, _ = bench.make_members(walk, n_members, SEED, graph_dir, say)
    n_requesters = max(math.ceil(n_alerts / 10), min(MIN_REQUESTERS, len(bodies) // 2))
    n_updaters = min(len(bodies) - n_requesters, 100)
    if n_updaters < 1:
        raise SystemExit(f"{n_alerts} alerts need more than {len(bodies)} members")
    rng = np.random.default_rng(SEED)
    points = alert_points(walk, n_alerts, rng)
    modes = ",".join(m for m in ("walk", "bike", "drive") if (graph_dir / f"{m}.json").is_file())
    result["setup"] = {
        "graph": name, "members": len(bodies), "alerts": n_alerts, "rate_per_s": args.rate,
        "member_updates_per_s": args.rate, "duration_s": duration_s,
        "restart_db_at_s": args.restart_db_at, "down_s": args.down_s, "clients": clients,
        "servers": args.servers, "outbox_workers": args.outbox_workers,
        "database": "embedded cluster (api.embedded) in a temporary directory",
    }  # fmt: skip
    sink = Sink()
    try:
        with (
            embedded_database(say) as (database_url, cluster),
            tempfile.TemporaryDirectory() as tmp,
        ):
            env = server_env(database_url, graph_dir, Path(tmp) / "var", modes)
            env.update(dict(kv.split("=", 1) for kv in args.server_env))
            done = subprocess.run(
                [ERN, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                raise RuntimeError(f"ern db upgrade failed:\n{done.stdout}\n{done.stderr}")
            tokens, _ = load_members(
                database_url, bodies, webhook_url=sink.url,
                want_tokens=n_requesters + n_updaters, say=say,
            )  # fmt: skip
            jobs = [(tokens[i % n_requesters], points[i]) for i in range(n_alerts)]
            updaters = tokens[n_requesters : n_requesters + n_updaters]
            serve_env = {**env, "ERN_RUN_WORKERS": "false"}
            logs: list[Path] = []
            with ExitStack() as running:
                for w in range(args.outbox_workers):
                    logs.append(Path(tmp) / f"worker-{w}.log")
                    running.enter_context(running_worker(env, logs[-1], say))
                bases = []
                for k in range(args.servers):
                    logs.append(Path(tmp) / f"serve-{k}.log")
                    bases.append(running.enter_context(running_server(serve_env, logs[-1], say)))
                at_start, _ = sink.counts()
                say(
                    f"{n_alerts} alerts and {n_alerts} member updates at {args.rate:g}/s each; "
                    f"database restart at {args.restart_db_at:g} s"
                )
                answers, wall_s, health, restart = run_async(
                    _restart_load(args, bases, jobs, updaters, clients, cluster)
                )
                say(f"restart: {restart}")
                states, waited = drain(database_url, sink, timeout_s=args.drain_s, say=say)
                by_alert, _ = sink.counts()
                keys = [a.key for a in answers if a.kind == "alert" and a.key]
                written = _written(database_url, keys)
                result.update(
                    restart_report(
                        answers, health, restart, written, by_alert - at_start,
                        sink.duplicates(), wall_s, args.rate,
                    )
                )  # fmt: skip
                result["outbox_states"] = states
                result["drain_wait_s"] = waited
            texts = {log.name: log.read_text(errors="replace") for log in logs}
            result["server_log_tracebacks"] = sum(
                t.count("Traceback") for n, t in texts.items() if n.startswith("serve")
            )
            result["worker_log_tracebacks"] = sum(
                t.count("Traceback") for n, t in texts.items() if n.startswith("worker")
            )
            if result["server_log_tracebacks"]:
                text = next(
                    t for n, t in texts.items() if n.startswith("serve") and "Traceback" in t
                )
                result["server_log_first_traceback"] = text[text.index("Traceback") :][:4000]
    finally:
        sink.close()
    return result


async def _restart_load(
    args: argparse.Namespace,
    bases: Sequence[str],
    jobs: list[tuple[str, tuple[float, float]]],
    updaters: list[str],
    clients: int,
    cluster: Any,
) -> tuple[list[Answer], float, list[tuple[float, int, str]], dict[str, float]]:
    started: list[float] = []
    stop_polling = asyncio.Event()
    load = asyncio.ensure_future(
        fire_mixed(
            bases, jobs, updaters, rate_per_s=args.rate, clients=clients, on_start=started.append
        )
    )
    await asyncio.sleep(0)
    t0 = started[0] if started else time.perf_counter()
    poll = asyncio.ensure_future(_poll_health(bases[0], stop_polling, t0))
    await asyncio.sleep(max(0.0, t0 + args.restart_db_at - time.perf_counter()))
    restart = await asyncio.to_thread(_restart_cluster, cluster, args.down_s, t0)
    answers, wall_s = await load
    stop_polling.set()
    health = await poll
    return answers, wall_s, health, restart


def render_restart(r: dict[str, Any]) -> str:
    """Human-readable summary of a restart run."""
    w = r["windows"]

    def lat(win: dict[str, Any]) -> str:
        a = win["all"]
        return f"p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms" if a else "none"

    rs = r["restart"]
    return "\n".join(
        [
            f"{r['requests']:,} requests ({r['rate_per_s']:g} alerts/s + as many member "
            f"updates) over {r['wall_s']:.1f} s: {r['requests_per_s_held']:.1f}/s held; "
            f"status {r['status']}",
            f"database stopped (immediate) at {rs['stop_at_s']:.1f} s, back at "
            f"{rs['up_at_s']:.1f} s; 503s for {r['seconds_of_503']:.1f} s "
            f"({r['unavailable_503']}, {r['unavailable_503_with_retry_after']} with Retry-After); "
            f"last error {r['last_error_after_db_up_s']:.2f} s after the database was back",
            f"latency before {lat(w['before'])}; around the restart {lat(w['around'])}; "
            f"after {lat(w['after'])}",
            f"/healthz not ok {r['healthz_not_ok']} times: {r['healthz_reasons']}",
            f"alerts 201 {r['alerts_created']} (missing in the database "
            f"{r['alerts_created_missing_in_db']}), errored {r['alerts_errored']} (written "
            f"anyway {r['alerts_errored_but_written']}), half-written {r['alerts_half_written']}",
            f"notifications {r['notifications_received']}/{r['notifications_expected']}, "
            f"duplicates {r['duplicate_deliveries']}, outbox {r['outbox_states']}",
            f"5xx other than 503: {r['server_errors_5xx_not_503']}; tracebacks in the server "
            f"log {r['server_log_tracebacks']}, in the worker log {r['worker_log_tracebacks']}",
        ]
    )


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
            f"{s['servers']} x ern serve --workers {s['server_workers']}"
            + (
                f", outbox and escalation in {s['outbox_workers']} x `ern worker`"
                if s["outbox_workers"]
                else ""
            ),
            f"outbox {d['outbox_states']}, sink received {d['sink_received']} "
            f"({d['sink_received_from_measured']} from the measured alerts, "
            f"{d['expected_from_measured']} expected; alerts short {d['measured_alerts_short']}, "
            f"over {d['measured_alerts_over']}; duplicate deliveries "
            f"{d['duplicate_deliveries']}) after {d['drain_wait_s']:.1f} s",
            _render_arrival(r["notification_latency"]),
            _render_cpu(r.get("cpu")),
            f"load at end {r['loadavg_at_end']}, total {r['total_s']:.0f} s",
        ]
    )


def _render_cpu(c: dict[str, Any] | None) -> str:
    if c is None:
        return "CPU per alert: not measured (no /proc)"
    parts = ", ".join(f"{k} {v:.2f} ms" for k, v in c["per_alert_ms"].items() if k != "total")
    return (
        f"CPU per alert while firing: {parts}; total {c['per_alert_ms']['total']:.2f} ms "
        f"({c['cores_used']:.2f} cores)"
    )


def _render_arrival(a: dict[str, Any]) -> str:
    if a["message"] is None or a["alert_complete"] is None:
        return "notifications after the 201: none arrived"
    return (
        f"notifications after the 201 ({a['messages']:,} messages): p50 "
        f"{a['message']['p50_ms']:.0f} ms, p99 {a['message']['p99_ms']:.0f} ms; whole first "
        f"wave ({a['alerts_complete']:,} alerts): p50 {a['alert_complete']['p50_ms']:.0f} ms, "
        f"p99 {a['alert_complete']['p99_ms']:.0f} ms"
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
    p.add_argument(
        "--server-workers", type=int, default=1, help="ern serve --workers N (default 1)"
    )
    p.add_argument(
        "--outbox-process",
        action="store_true",
        help="ern serve with ERN_RUN_WORKERS=false plus one `ern worker` process",
    )
    p.add_argument(
        "--server-nice",
        type=int,
        default=0,
        metavar="N",
        help="run ern serve under `nice -n N`: with --outbox-process, the delivering worker "
        "then gets the CPU first when both want it (default 0)",
    )
    p.add_argument(
        "--server-access-log",
        action="store_true",
        help="keep the server's per-request access line (default --no-access-log)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (with --json)")
    p.add_argument(
        "--restart-db-at",
        type=float,
        metavar="S",
        help="fault mode: alerts and member updates at --rate each (default 20/s) against a "
        "private embedded cluster, restarted (immediate shutdown, then start) S seconds in",
    )
    p.add_argument(
        "--down-s", type=float, default=1.0, help="restart: seconds the database stays away"
    )
    p.add_argument(
        "--duration-s", type=float, help="restart: seconds of load (default max(3 S, S + 20))"
    )
    p.add_argument(
        "--servers",
        type=int,
        default=1,
        help="separate `ern serve` processes, each on its own port, requests spread round robin "
        "(default 1)",
    )
    p.add_argument(
        "--outbox-workers",
        type=int,
        default=0,
        help="separate `ern worker` processes; ern serve then runs none (restart: default 1; "
        "--outbox-process is 1)",
    )
    args = p.parse_args(argv)
    if args.servers < 1 or args.outbox_workers < 0 or args.server_workers < 1:
        p.error("--servers and --server-workers take 1 or more, --outbox-workers 0 or more")
    if args.restart_db_at is not None:
        args.rate = args.rate or 20.0
        args.outbox_workers = args.outbox_workers or 1
        result = run_restart(args)
        print(json.dumps(result, indent=1) if args.json else render_restart(result))
        return 0
    result = run(args)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
