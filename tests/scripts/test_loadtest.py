"""scripts/loadtest.py runs end to end (--quick) against PostGIS and keeps its JSON contract.

Its HTTP client and webhook sink are checked on their own against loopback servers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from types import ModuleType
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.paths import REPO

LOADTEST = REPO / "scripts" / "loadtest.py"


def _run_quick(database_url: str, *extra: str) -> dict[str, Any]:
    env = {**os.environ, "ERN_TEST_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, str(LOADTEST), "--quick", "--json", "--quiet", "--drain-s", "30", *extra],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _assert_cpu_accounted(result: dict[str, Any]) -> None:
    # every part ran while the alerts were fired, ern serve's worker process counted as the
    # worker (not as the server), and the parts add up to the total
    cpu = result["cpu"]
    per_alert = cpu["per_alert_ms"]
    assert set(per_alert) == {"server", "worker", "postgres", "sink", "load generator", "total"}
    for part in ("server", "worker", "postgres", "sink", "load generator"):
        assert per_alert[part] > 0, cpu
    assert per_alert["total"] == pytest.approx(sum(v for k, v in per_alert.items() if k != "total"))
    assert cpu["window_s"] == result["wall_s"]
    assert 0 < cpu["cores_used"] <= result["machine"]["cores"] + 0.5


def _assert_delivered_alert_by_alert(result: dict[str, Any]) -> None:
    deliveries = result["deliveries"]
    assert deliveries["outbox_states"].get("pending", 0) == 0, deliveries
    # every measured alert's messages, none of the warm-up's, whenever they arrived
    assert deliveries["sink_received_from_measured"] == deliveries["expected_from_measured"]
    assert deliveries["expected_from_measured"] == result["notified_count"]["total"]
    assert deliveries["measured_alerts_short"] == deliveries["measured_alerts_over"] == 0
    # Every measured message was timed, and every alert's first wave arrived in full.
    arrival = result["notification_latency"]
    assert arrival["messages"] == deliveries["sink_received_from_measured"]
    histogram = result["notified_count"]["histogram"]
    assert arrival["alerts_complete"] == sum(n for k, n in histogram.items() if int(k) > 0)
    assert deliveries["sink_received"] == (
        deliveries["sink_received_from_measured"] + deliveries["sink_received_from_warm_up"]
    )


@pytest.mark.slow
def test_quick_load_test_sends_every_alert_and_reports_latency(database_url: str) -> None:
    result = _run_quick(database_url)
    assert result["requests"] == result["alerts"] == 200
    assert result["errors"] == 0, result["status"]
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["setup"]["requesters"] >= 250
    assert result["notified_count"]["total"] > 0
    # notifications went through the outbox workers to the local sink
    assert result["deliveries"]["sink_received"] > 0
    assert result["deliveries"]["outbox_states"].get("failed", 0) == 0
    assert result["server_log_tracebacks"] == 0
    assert result["setup"]["graph"] == "monaco_2016"
    # the throwaway database is gone
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (result["setup"]["database"],)
        ).fetchone()
    assert left == (0,)
    _assert_delivered_alert_by_alert(result)
    assert result["setup"]["server_workers"] == 1 and result["setup"]["outbox_process"] is False
    _assert_cpu_accounted(result)


@pytest.mark.slow
def test_two_server_processes_and_a_separate_outbox_worker(database_url: str) -> None:
    result = _run_quick(
        database_url, "--alerts", "60", "--server-workers", "2", "--outbox-process",
        "--server-nice", "5",
    )  # fmt: skip
    assert result["requests"] == 60 and result["errors"] == 0, result["status"]
    assert result["setup"]["server_nice"] == 5  # checked on the running server, else an error
    assert result["warm_up"]["status"] == {"201": 16}  # 8 per server process
    assert result["setup"]["server_workers"] == 2 and result["setup"]["outbox_process"] is True
    # ERN_RUN_WORKERS=false in both server processes: only `ern worker` sent these
    _assert_delivered_alert_by_alert(result)
    assert result["deliveries"]["sink_received"] > 0
    assert result["server_log_tracebacks"] == 0
    _assert_cpu_accounted(result)


@pytest.mark.slow
def test_two_servers_and_two_workers_deliver_every_message_exactly_once(database_url: str) -> None:
    # two `ern serve` on their own ports, requests round robin, two `ern worker` draining the
    # one outbox (SKIP LOCKED), open loop: every alert's messages arrive, none twice
    result = _run_quick(
        database_url, "--alerts", "80", "--rate", "20", "--servers", "2", "--outbox-workers", "2",
    )  # fmt: skip
    assert result["requests"] == 80 and result["errors"] == 0, result["status"]
    setup = result["setup"]
    assert (setup["servers"], setup["server_workers"], setup["outbox_workers"]) == (2, 1, 2)
    assert result["warm_up"]["status"] == {"201": 16}  # 8 per server process
    assert result["created_by_server"] == [40, 40]
    _assert_delivered_alert_by_alert(result)
    assert result["deliveries"]["sink_received"] > 0
    assert result["deliveries"]["duplicate_deliveries"] == 0
    # both workers and both servers were running (and counted) while the alerts were fired
    assert result["cpu"]["processes"]["worker"] == 2, result["cpu"]
    assert result["cpu"]["processes"]["server"] == 2, result["cpu"]
    assert result["server_log_tracebacks"] == 0
    _assert_cpu_accounted(result)


def _load_loadtest() -> ModuleType:
    # Named "loadtest" with scripts/ on sys.path (the script puts it there): the sink's
    # spawned process imports the module by that name.
    if "loadtest" in sys.modules:
        return sys.modules["loadtest"]
    spec = importlib.util.spec_from_file_location("loadtest", LOADTEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadtest"] = module
    spec.loader.exec_module(module)
    return module


class _Server:
    """A loopback HTTP server whose answers are given in advance; counts connections."""

    def __init__(self, answers: list[bytes], *, close_after_each: bool = False) -> None:
        self.answers = answers
        self.close_after_each = close_after_each
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.answers.pop(0))
                await writer.drain()
                if self.close_after_each:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()


def test_client_keeps_the_connection_and_reads_every_body_framing() -> None:
    loadtest = _load_loadtest()
    server = _Server(
        [
            b'HTTP/1.1 201 Created\r\ncontent-length: 10\r\n\r\n{"id":"a"}',
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 429 Too Many\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ]
    )

    async def go() -> list[tuple[int, bytes]]:
        tcp = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        http = loadtest.HttpConnection("127.0.0.1", port)
        try:
            return [await http.post("/v1/alerts", b"{}", {"X-N": str(i)}) for i in range(4)]
        finally:
            http.close()
            tcp.close()

    answers = asyncio.run(go())
    assert answers == [(201, b'{"id":"a"}'), (200, b"abcde"), (429, b"no"), (200, b"")]
    # one connection until the server said close, then a new one
    assert server.connections == 2
    first = server.requests[0]
    assert first.startswith(b"POST /v1/alerts HTTP/1.1\r\n") and b"\r\nX-N: 0\r\n" in first
    assert first.endswith(b"Content-Length: 2\r\n\r\n{}")


def test_client_reopens_an_idle_connection_the_server_closed() -> None:
    loadtest = _load_loadtest()
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    server = _Server([ok, ok], close_after_each=True)

    async def go() -> list[tuple[int, bytes]]:
        tcp = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        http = loadtest.HttpConnection("127.0.0.1", port)
        try:
            first = await http.post("/x", b"1", {})
            await asyncio.sleep(0.05)  # the server has closed its side by now
            return [first, await http.post("/x", b"2", {})]
        finally:
            http.close()
            tcp.close()

    assert asyncio.run(go()) == [(200, b"ok"), (200, b"ok")]
    assert server.connections == 2 and len(server.requests) == 2


def test_sink_counts_messages_by_alert_and_kind_over_one_connection() -> None:
    loadtest = _load_loadtest()
    sink = loadtest.Sink()
    port = int(sink.url.rsplit(":", 1)[1].split("/")[0])
    deliveries = ["a1:m1:webhook:alert", "a1:m2:webhook:alert", "a2:m1:webhook:cancel"]

    async def go() -> list[int]:
        http = loadtest.HttpConnection("127.0.0.1", port)
        try:
            return [(await http.post("/hook", b"{}", {"X-Ern-Delivery": d}))[0] for d in deliveries]
        finally:
            http.close()

    try:
        assert asyncio.run(go()) == [200, 200, 200]
        by_alert, by_kind = sink.counts()
        assert by_alert == {"a1": 2, "a2": 1} and by_kind == {"alert": 2, "cancel": 1}
        assert sink.count == 3
    finally:
        sink.close()
    assert not sink.process.is_alive()


def test_sink_answers_more_arrivals_than_a_pipe_holds() -> None:
    # A full run's arrivals are several hundred kB; the pipe's buffer is 64 kB.
    loadtest = _load_loadtest()
    sink = loadtest.Sink()
    port = int(sink.url.rsplit(":", 1)[1].split("/")[0])
    alert_ids = [f"{i:032x}" for i in range(6000)]

    async def go() -> None:
        http = loadtest.HttpConnection("127.0.0.1", port)
        try:
            for alert_id in alert_ids:
                await http.post("/hook", b"{}", {"X-Ern-Delivery": f"{alert_id}:m:webhook:alert"})
        finally:
            http.close()

    try:
        before = time.monotonic()
        asyncio.run(go())
        # Asked, and not read for a while: the sink must finish writing all the same.
        sink._conn.send("arrivals")
        time.sleep(0.5)
        answer: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: answer.update(sink._conn.recv()), daemon=True)
        reader.start()
        reader.join(30)
        assert answer, "the sink's answer did not arrive in full"
        arrivals = sink.arrivals()
        assert arrivals == answer
        assert sorted(arrivals) == alert_ids
        assert all(len(times) == 1 and before <= times[0] <= time.monotonic()
                   for times in arrivals.values())  # fmt: skip
        assert sink.count == 6000  # the pipe still answers afterwards
    finally:
        sink.close()


@pytest.mark.parametrize(
    ("value", "on"),
    [(None, True), ("true", True), ("1", True), ("false", False), ("0", False),
     ("off", False), ("no", False)],
)  # fmt: skip
def test_worker_settings_are_read_as_the_server_reads_them(value: str | None, on: bool) -> None:
    # decides whether the script waits for ern serve's own worker process before measuring
    loadtest = _load_loadtest()
    env = {} if value is None else {"ERN_WORKER_PROCESS": value}
    assert loadtest._env_on(env, "ERN_WORKER_PROCESS") is on
    if value is not None:
        from api.settings import Settings

        assert Settings(worker_process=value).worker_process is on  # type: ignore[arg-type]
