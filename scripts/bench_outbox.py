#!/usr/bin/env python
"""Outbox worker throughput: deliveries/s and worker CPU per delivery against a local webhook sink.

Steps, all on the loopback interface and undone at the end:

1. A fresh database ``ern_bench_outbox_<hex>`` (PostGIS, ``ern db upgrade``) on the server of
   ``ERN_TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432``).
2. A webhook sink in a separate process (so its CPU is not counted) that answers 200;
   HTTP/1.1 with keep-alive, or HTTP/1.0 (one connection per request, like
   ``scripts/loadtest.py``'s sink) with ``--http10``.
3. ``--members`` members whose contact is a webhook to the sink; each round enqueues
   ``--alerts`` alerts to ``--per-alert`` members each (one webhook row per member),
   as POST /v1/alerts does, and commits.
4. ``--workers`` outbox workers (threads of this process, as in ``ern serve``) drain the
   outbox with ``run_once`` until it is empty. Wall time and this process's CPU time
   (user + system, all threads) are measured for the drain only; PostgreSQL's CPU is not.

    .venv/bin/python scripts/bench_outbox.py [--alerts 500] [--per-alert 9] [--rounds 3]
        [--batch-size N] [--concurrency N] [--workers 1] [--http10] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "bench-outbox-" + "k" * 40  # a throwaway database; never a real deployment's key


def _sink(port_out: Any, count: Any, http10: bool) -> None:
    """The sink process: answer every POST with 200 and count it."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0" if http10 else "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with count.get_lock():
                count.value += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # the default 5 drops connections that many senders open

    server = Server(("127.0.0.1", 0), Handler)
    port_out.value = server.server_address[1]
    server.serve_forever()


@contextmanager
def sink(*, http10: bool) -> Iterator[tuple[str, Any]]:
    """A sink process; its URL and shared request counter."""
    ctx = multiprocessing.get_context("spawn")
    port, count = ctx.Value("i", 0), ctx.Value("q", 0)
    proc = ctx.Process(target=_sink, args=(port, count, http10), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while not port.value:
            if time.monotonic() > deadline or not proc.is_alive():
                raise RuntimeError("the sink process did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port.value}/hook", count
    finally:
        proc.terminate()
        proc.join(10)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database with PostGIS and the migrations; dropped (FORCE) on the way out."""
    import psycopg
    from sqlalchemy.engine import make_url

    from api import database

    base = os.environ.get("ERN_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL
    admin = make_url(base).set(drivername="postgresql", database="postgres")
    admin_dsn = admin.render_as_string(hide_password=False)
    name = f"ern_bench_outbox_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name)
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION postgis")
        sa_url = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        database.upgrade(sa_url)
        yield sa_url
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, run the rounds, and return the figures."""
    from pydantic import SecretStr
    from sqlalchemy import func, insert, select

    from api.database import make_engine, make_session_factory, transaction
    from api.members.crypto import contact_cipher
    from api.members.models import Member
    from api.notify.models import Delivery
    from api.notify.service import enqueue_many
    from api.notify.worker import OutboxWorker
    from api.settings import Settings

    rounds: list[dict[str, float]] = []
    with fresh_database() as url, sink(http10=args.http10) as (hook_url, received):
        settings = Settings(
            database_url=url, secret_key=SecretStr(SECRET), webhook_allow_private=True
        )
        engine = make_engine(url, pool_size=max(2, 2 * args.workers))
        factory = make_session_factory(engine)
        cipher = contact_cipher(settings)
        ciphertext = cipher.encrypt({"webhook_url": hook_url})
        ids = [uuid.uuid4() for _ in range(args.members)]
        with transaction(factory) as session:
            session.execute(
                insert(Member),
                [
                    {"id": i, "handle": f"bench-{i.hex[:12]}", "contact_ciphertext": ciphertext}
                    for i in ids
                ],
            )
        with factory() as session:
            members = list(session.scalars(select(Member)))
        options: dict[str, Any] = {"listen": False}
        if args.batch_size:
            options["batch_size"] = args.batch_size
        if args.concurrency:
            options["concurrency"] = args.concurrency
        workers = [
            OutboxWorker(factory, settings, name=f"bench-{n}", **options)
            for n in range(args.workers)
        ]
        try:
            for round_no in range(args.rounds + 1):
                now = datetime.now(UTC)
                with transaction(factory) as session:
                    for a in range(args.alerts):
                        start = (a * args.per_alert) % len(members)
                        chosen = [
                            members[(start + k) % len(members)] for k in range(args.per_alert)
                        ]
                        enqueue_many(
                            session,
                            settings,
                            messages=[(m, {"text": "bench", "n": a}) for m in chosen],
                            alert_id=uuid.uuid4(),
                            message_kind="alert",
                            now=now,
                        )
                expected = args.alerts * args.per_alert
                before = received.value
                attempted = [0] * len(workers)

                def drain(n: int, attempted: list[int]) -> None:
                    while (got := workers[n].run_once()) > 0:
                        attempted[n] += got

                cpu0, wall0 = _cpu_s(), time.perf_counter()
                threads = [
                    threading.Thread(target=drain, args=(n, attempted)) for n in range(len(workers))
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                wall_s, cpu_s = time.perf_counter() - wall0, _cpu_s() - cpu0
                with factory() as session:
                    states = dict(
                        session.execute(  # type: ignore[arg-type]
                            select(Delivery.state, func.count()).group_by(Delivery.state)
                        ).all()
                    )
                    session.execute(Delivery.__table__.delete())
                    session.commit()
                got = received.value - before
                if states != {"sent": expected} or got != expected or sum(attempted) != expected:
                    msg = f"round {round_no}: states {states}, sink got {got}, want {expected}"
                    raise RuntimeError(msg)
                figures = {
                    "deliveries": expected,
                    "wall_s": wall_s,
                    "cpu_s": cpu_s,
                    "deliveries_per_s": expected / wall_s,
                    "cpu_us_per_delivery": 1e6 * cpu_s / expected,
                }
                if round_no == 0:
                    continue  # warm-up: connections, compiled statements, threads
                rounds.append(figures)
                if not args.json:
                    print(
                        f"round {round_no}: {expected} deliveries in {wall_s:.2f} s "
                        f"({figures['deliveries_per_s']:.0f}/s), CPU {cpu_s:.2f} s "
                        f"({figures['cpu_us_per_delivery']:.0f} us/delivery)",
                        file=sys.stderr,
                    )
        finally:
            for worker in workers:
                worker.close()
            engine.dispose()
    return {
        "batch_size": args.batch_size or workers[0].batch_size,
        "concurrency": workers[0].concurrency,
        "workers": args.workers,
        "sink": "HTTP/1.0" if args.http10 else "HTTP/1.1 keep-alive",
        "rounds": rounds,
        "median_deliveries_per_s": statistics.median(r["deliveries_per_s"] for r in rounds),
        "median_cpu_us_per_delivery": statistics.median(r["cpu_us_per_delivery"] for r in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=500, help="alerts enqueued per round")
    parser.add_argument("--per-alert", type=int, default=9, help="members notified per alert")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (after a warm-up)")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the worker's default")
    parser.add_argument("--concurrency", type=int, default=0, help="0: the worker's default")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--http10", action="store_true", help="sink closes every connection")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # INFO, as `ern serve` logs, but to /dev/null: the cost of formatting is counted, not a tty's.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=open(os.devnull, "w"),  # noqa: SIM115  (open for the whole run)
    )
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"batch {result['batch_size']}, {result['workers']} worker(s), sink {result['sink']}: "
            f"median {result['median_deliveries_per_s']:.0f} deliveries/s, "
            f"{result['median_cpu_us_per_delivery']:.0f} us CPU/delivery"
        )


if __name__ == "__main__":
    main()
