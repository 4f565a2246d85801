"""Batched rounds: many rows leased, sent concurrently over kept-alive connections, one record."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from api.clock import ManualClock
from api.database import DriverStatement, transaction
from api.members.models import Member
from api.notify.channels import HttpAnswer, HttpPoster
from api.notify.errors import PermanentDeliveryError, TransientDeliveryError
from api.notify.service import delivery_id
from api.settings import Settings
from tests.notify.conftest import (
    Answer,
    HttpReceiver,
    Received,
    deliveries,
    self_signed_certificate,
    serve,
)
from tests.notify.test_notify_faults import wait_until


def _by_path(request: Received) -> Answer:
    """Answer the status the path names: /s/404 gets a 404 (a 429 says Retry-After: 120)."""
    status = int(request.path.rsplit("/", 1)[1])
    headers = {"Retry-After": "120"} if status == 429 else {}
    return status, headers, b"{}"


@pytest.fixture
def routed() -> Iterator[HttpReceiver]:
    yield from serve(HttpReceiver(default=_by_path))


@pytest.fixture
def dropping() -> Iterator[HttpReceiver]:
    """A receiver that closes every connection after answering, without saying so."""
    yield from serve(HttpReceiver(default=lambda _: (200, {}, b"{}")), drop_idle=True)


class Statements:
    """The SQL statements one engine runs while the block is open, DriverStatements included
    (they go to psycopg directly, past the engine's events)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[str] = []
        self._run = DriverStatement._run

    def _record(self, conn, cursor, statement: str, *args) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(statement)

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._record)
        run = self._run

        def recorded(statement: DriverStatement, session: Session, params: Any) -> Any:
            self.seen.append(statement.sql)
            return run(statement, session, params)

        DriverStatement._run = recorded  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)
        DriverStatement._run = self._run  # type: ignore[method-assign]


class TestBatch:
    def test_mixed_outcomes_of_one_batch_are_recorded_by_one_statement(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        routed: HttpReceiver,
        committed: sessionmaker[Session],
        engine: Engine,
        notify_settings: Settings,
        clock: ManualClock,
        settings: Settings,
    ) -> None:
        statuses = [200, 500, 404, 429, 200, 503]
        members = [make_member(webhook_url=f"{routed.url}/s/{status}") for status in statuses]
        unreadable = make_member(webhook_url=f"{routed.url}/s/200")
        with transaction(committed) as session:
            row = session.get(Member, unreadable.id)
            assert row is not None
            row.contact_ciphertext = b"encrypted under another key"
        alert_id = enqueue_committed(*members, unreadable)
        worker = make_worker(batch_size=16, concurrency=4)
        with Statements(engine) as sql:
            assert worker.run_once() == len(members) + 1
        # Every outcome (sent, retry, failed, unreadable) in one UPDATE of the outbox.
        assert sum("unnest" in s for s in sql.seen) == 1
        assert sum(s.lstrip().upper().startswith("UPDATE OUTBOX") for s in sql.seen) <= 3

        rows = {r.member_id: r for r in deliveries(committed, alert_id)}
        now = clock.now()
        for member, status in zip(members, statuses, strict=True):
            row = rows[member.id]
            assert row.attempts == 1
            if status == 200:
                assert (row.state, row.sent_at, row.last_error) == ("sent", now, None)
            elif status == 404:
                assert (row.state, row.sent_at) == ("failed", None)
                assert row.last_error == "webhook answered HTTP 404"
            elif status == 429:
                assert row.state == "pending"
                assert row.next_attempt_at == now + timedelta(seconds=120)
                assert row.last_error == "webhook answered HTTP 429 (Retry-After 120 s)"
            else:
                wait_s = (row.next_attempt_at - now).total_seconds()
                assert row.state == "pending"
                assert (
                    notify_settings.backoff_base_s / 2 <= wait_s <= notify_settings.backoff_base_s
                )
                assert row.last_error == f"webhook answered HTTP {status}"
        broken = rows[unreadable.id]
        assert broken.state == "failed"
        assert "cannot be decrypted" in (broken.last_error or "")
        assert Counter(r.path for r in routed.requests) == Counter(f"/s/{s}" for s in statuses)

        # Only the retryable rows come back, each under its delivery id, and then succeed.
        clock.advance(120)
        assert worker.run_once() == 3
        expected = {
            delivery_id(alert_id, m.id, "webhook", "alert"): s
            for m, s in zip(members, statuses, strict=True)
        }
        assert Counter(routed.ids()) == Counter(
            {i: 2 if s in (500, 429, 503) else 1 for i, s in expected.items()}
        )

    def test_a_zombie_batch_changes_only_rows_still_under_its_lease(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        routed: HttpReceiver,
        committed: sessionmaker[Session],
        clock: ManualClock,
    ) -> None:
        members = [make_member(webhook_url=f"{routed.url}/s/200") for _ in range(4)]
        alert_id = enqueue_committed(*members)
        doomed = make_worker(batch_size=4, lease_s=60)
        claims = doomed.claim()
        outcomes = doomed.send_all(claims)
        # Two of the rows' leases expire and another worker takes and finishes them.
        with transaction(committed) as session:
            from sqlalchemy import update

            from api.notify.models import Delivery

            session.execute(
                update(Delivery)
                .where(Delivery.id.in_([c.id for c in claims[:2]]))
                .values(next_attempt_at=clock.now())
            )
        assert make_worker(batch_size=4).run_once() == 2
        assert doomed.record(claims, outcomes) == 2
        rows = {r.id: r for r in deliveries(committed, alert_id)}
        assert [rows[c.id].attempts for c in claims] == [2, 2, 1, 1]
        assert {r.state for r in rows.values()} == {"sent"}

    def test_lease_covers_every_wave_of_a_batch(
        self, make_worker, notify_settings: Settings
    ) -> None:
        one_attempt_s = max(30.0, 6 * notify_settings.delivery_timeout_s)
        assert make_worker(batch_size=64, concurrency=64).lease_s == one_attempt_s
        assert make_worker(batch_size=64, concurrency=16).lease_s == 4 * one_attempt_s
        assert make_worker(batch_size=10, concurrency=4).lease_s == 3 * one_attempt_s


class TestConnections:
    def test_webhooks_to_one_host_reuse_kept_alive_connections(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
    ) -> None:
        members = [make_member(webhook_url=f"{webhook.url}/h/{i}") for i in range(40)]
        alert_id = enqueue_committed(*members)
        worker = make_worker(batch_size=10, concurrency=3)
        assert [worker.run_once() for _ in range(5)] == [10, 10, 10, 10, 0]
        assert len(webhook.requests) == 40
        # At most one connection per send in flight, kept across requests and batches.
        assert len({r.client for r in webhook.requests}) <= 3
        assert {r.state for r in deliveries(committed, alert_id)} == {"sent"}

    def test_connections_the_receiver_dropped_are_replaced_without_losing_a_delivery(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        dropping: HttpReceiver,
        committed: sessionmaker[Session],
    ) -> None:
        members = [make_member(webhook_url=f"{dropping.url}/x") for _ in range(6)]
        alert_id = enqueue_committed(*members)
        worker = make_worker(batch_size=6, concurrency=1)
        assert worker.run_once() == 6
        rows = deliveries(committed, alert_id)
        assert {(r.state, r.attempts) for r in rows} == {("sent", 1)}
        assert Counter(dropping.ids()) == Counter(r.delivery_id for r in rows)
        assert len({r.client for r in dropping.requests}) == 6

    def test_sends_to_one_host_stay_within_its_connection_cap(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        committed: sessionmaker[Session],
        notify_settings: Settings,
    ) -> None:
        slow = SlowReceiver(delay_s=0.1)
        with contextlib.closing(serve(HttpReceiver(default=slow.answer))) as running:
            gateway = next(running)
            members = [make_member(webhook_url=f"{gateway.url}/h/{i}") for i in range(12)]
            alert_id = enqueue_committed(*members)
            settings = notify_settings.model_copy(update={"http_connections_per_host": 3})
            worker = make_worker(settings, batch_size=12, concurrency=12)
            assert worker.run_once() == 12
        assert {r.state for r in deliveries(committed, alert_id)} == {"sent"}
        # Twelve senders, one host: three requests in flight at most, on three connections.
        assert slow.most_in_flight == 3
        assert len({r.client for r in gateway.requests}) == 3


class SlowReceiver:
    """Answers 200 after ``delay_s`` (or once ``release`` is set) and counts requests in flight."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.release = threading.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def answer(self, request: Received) -> Answer:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.release.wait(self.delay_s)
        with self._lock:
            self.in_flight -= 1
        return 200, {}, b"{}"


class TestLifecycle:
    def test_a_worker_is_stopped_from_a_running_event_loop(
        self, make_member, enqueue_committed, make_worker, webhook: HttpReceiver
    ) -> None:
        # As the service's lifespan does: its event loop is running when it stops the worker.
        enqueue_committed(make_member(webhook_url=f"{webhook.url}/a"))
        worker = make_worker()
        worker.start()
        assert wait_until(lambda: len(webhook.requests) == 1)

        async def lifespan_exit() -> None:
            worker.stop(timeout_s=5)

        asyncio.run(lifespan_exit())
        # Stopped and closed: a later round opens a loop and connections anew.
        enqueue_committed(make_member(webhook_url=f"{webhook.url}/b"))
        assert worker.run_once() == 1
        assert [r.path for r in webhook.requests] == ["/a", "/b"]
        assert len({r.client for r in webhook.requests}) == 2


class TestConcurrentWorkers:
    def test_workers_never_send_the_same_row_at_once(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        committed: sessionmaker[Session],
    ) -> None:
        in_flight: Counter[str] = Counter()
        overlaps: list[str] = []
        lock = threading.Lock()

        def slow(request: Received) -> Answer:
            key = request.headers["x-ern-delivery"]
            with lock:
                in_flight[key] += 1
                if in_flight[key] > 1:
                    overlaps.append(key)
            time.sleep(0.01)
            with lock:
                in_flight[key] -= 1
            return 200, {}, b"{}"

        receiver_gen = serve(HttpReceiver(default=slow))
        receiver = next(receiver_gen)
        try:
            members = [make_member(webhook_url=f"{receiver.url}/w") for _ in range(90)]
            alert_id = enqueue_committed(*members)
            workers = [make_worker(batch_size=16, concurrency=8, listen=False) for _ in range(3)]
            for worker in workers:
                worker.start()
            assert wait_until(lambda: len(receiver.requests) >= 90, timeout_s=60)
            assert wait_until(
                lambda: {r.state for r in deliveries(committed, alert_id)} == {"sent"}
            )
            for worker in workers:
                worker.stop(timeout_s=10)
        finally:
            receiver_gen.close()
        assert overlaps == []
        counts = Counter(receiver.ids())
        assert set(counts.values()) == {1}
        assert set(counts) == {delivery_id(alert_id, m.id, "webhook", "alert") for m in members}
        rows = deliveries(committed, alert_id)
        assert {(r.state, r.attempts) for r in rows} == {("sent", 1)}


class TestLogging:
    def test_sends_log_nothing_at_info_and_failures_warn_without_the_url(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        routed: HttpReceiver,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        ok = make_member(webhook_url=f"{routed.url}/s/200")
        gone = make_member(webhook_url=f"{routed.url}/s/410")
        alert_id = enqueue_committed(ok, gone)
        caplog.set_level(logging.INFO)
        assert make_worker().run_once() == 2
        records = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert [(r.levelname, r.name) for r in records] == [("WARNING", "ern.notify")]
        text = records[0].getMessage()
        assert delivery_id(alert_id, gone.id, "webhook", "alert") in text
        assert "HTTP 410" in text and routed.url not in text and "127.0.0.1" not in text


def post(poster: HttpPoster, url: str, **options: Any) -> HttpAnswer:
    """One POST from a fresh event loop (the poster's connections stay with that loop)."""

    async def run() -> HttpAnswer:
        try:
            return await poster.post(url, what="webhook", headers={}, body=b"{}", **options)
        finally:
            await poster.aclose()

    return asyncio.run(run())


async def post_async(poster: HttpPoster, url: str) -> HttpAnswer:
    """One webhook-like POST on the running loop."""
    return await poster.post(url, what="webhook", headers={}, body=b"{}")


class TestPoster:
    def test_idle_connections_up_to_the_limit_are_kept(
        self, webhook: HttpReceiver, routed: HttpReceiver
    ) -> None:
        async def clients(poster: HttpPoster) -> int:
            for _ in range(2):
                for url in (f"{webhook.url}/a", f"{routed.url}/s/200"):
                    answer = await poster.post(url, what="webhook", headers={}, body=b"{}")
                    assert answer.status == 200
            await poster.aclose()
            seen = {r.client for r in [*webhook.requests, *routed.requests]}
            webhook.requests.clear()
            routed.requests.clear()
            return len(seen)

        assert asyncio.run(clients(HttpPoster(timeout_s=3.0, max_idle=2))) == 2
        assert asyncio.run(clients(HttpPoster(timeout_s=3.0, max_idle=1))) == 4
        assert asyncio.run(clients(HttpPoster(timeout_s=3.0, idle_s=0.0))) == 4

    def test_requests_in_flight_to_one_origin_use_a_connection_each(
        self, webhook: HttpReceiver
    ) -> None:
        poster = HttpPoster(timeout_s=3.0, max_idle=8)

        async def burst() -> None:
            await asyncio.gather(
                *(
                    poster.post(f"{webhook.url}/b", what="webhook", headers={}, body=b"{}")
                    for _ in range(5)
                )
            )

        async def run() -> None:
            for _ in range(3):
                await burst()
            await poster.aclose()

        asyncio.run(run())
        assert len(webhook.requests) == 15
        # Five at once need five connections; the next bursts reuse them.
        assert len({r.client for r in webhook.requests}) == 5

    def test_requests_beyond_the_per_origin_cap_wait_for_a_turn(self, routed: HttpReceiver) -> None:
        held = SlowReceiver(delay_s=10.0)  # answers once released
        poster = HttpPoster(timeout_s=5.0, per_origin=2)

        async def run(receiver: HttpReceiver) -> tuple[int, int, list[int]]:
            capped = [
                asyncio.ensure_future(post_async(poster, f"{receiver.url}/c/{i}")) for i in range(6)
            ]
            for _ in range(200):  # until both turns are taken (at most 2 s)
                if held.in_flight == 2:
                    break
                await asyncio.sleep(0.01)
            # Another host does not wait for this one's turns.
            other = await post_async(poster, f"{routed.url}/s/200")
            arrived_meanwhile = len(receiver.requests)
            held.release.set()
            answers = await asyncio.gather(*capped)
            await poster.aclose()
            return other.status, arrived_meanwhile, [a.status for a in answers]

        with contextlib.closing(serve(HttpReceiver(default=held.answer))) as running:
            receiver = next(running)
            other, arrived_meanwhile, statuses = asyncio.run(run(receiver))
        assert other == 200
        assert arrived_meanwhile == 2  # the other four waited for a turn
        assert statuses == [200] * 6
        assert held.most_in_flight == 2
        assert len({r.client for r in receiver.requests}) == 2

    def test_a_request_without_a_turn_within_the_timeout_fails_as_busy_unsent(self) -> None:
        stuck = SlowReceiver(delay_s=10.0)
        poster = HttpPoster(timeout_s=0.5, per_origin=1)

        async def run(url: str) -> list[BaseException | HttpAnswer]:
            # The first takes the only turn and hangs; the second waits for it and gives up
            # first (it started waiting before the first was even connected).
            outcomes = await asyncio.gather(
                post_async(poster, f"{url}/first"),
                post_async(poster, f"{url}/second"),
                return_exceptions=True,
            )
            stuck.release.set()
            # The turn is free again: the next request goes out.
            outcomes.append(await post_async(poster, f"{url}/third"))
            await poster.aclose()
            return outcomes

        with contextlib.closing(serve(HttpReceiver(default=stuck.answer))) as running:
            receiver = next(running)
            first, second, third = asyncio.run(run(receiver.url))
        assert isinstance(first, TransientDeliveryError)
        assert "timed out" in str(first)
        assert isinstance(second, TransientDeliveryError)
        assert str(second) == "webhook busy: 1 requests to its host in flight"
        assert isinstance(third, HttpAnswer)
        assert third.status == 200
        assert [r.path for r in receiver.requests] == ["/first", "/third"]

    def test_answers_and_transport_errors_are_classified(self, routed: HttpReceiver) -> None:
        from tests.notify.conftest import free_port

        poster = HttpPoster(timeout_s=3.0)
        answer = post(poster, f"{routed.url}/s/429")
        assert (answer.status, answer.retry_after) == (429, "120")
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            post(poster, f"http://127.0.0.1:{free_port()}/")
        for bad in (
            "ftp://example.org/x",
            "http:///nohost",
            "http://127.0.0.1:99999/",
            f"{routed.url}/s/200 HTTP/1.1\r\nX-Injected: 1",
            f"{routed.url}/caf\u00e9",
        ):
            with pytest.raises(PermanentDeliveryError, match="not usable"):
                post(poster, bad)
        assert [r.path for r in routed.requests] == ["/s/429"]

    def test_https_receivers_must_present_a_trusted_certificate(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        import socket
        import ssl

        cert, key = self_signed_certificate(tmp_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            with conn, contextlib.suppress(ssl.SSLError, OSError):
                context.wrap_socket(conn, server_side=True).close()

        server = threading.Thread(target=accept, daemon=True)
        server.start()
        poster = HttpPoster(timeout_s=3.0)
        try:
            # A self-signed certificate is refused: the webhook is never sent in clear or
            # to an impostor, and the attempt is retried (the receiver may fix its certificate).
            with pytest.raises(
                TransientDeliveryError, match=r"unreachable \(SSLCertVerificationError\)"
            ):
                post(poster, f"https://127.0.0.1:{port}/h")
        finally:
            server.join(5)
            listener.close()


class RawServer:
    """A TCP server answering each request with scripted bytes, written in small pieces."""

    def __init__(self, answer: bytes, *, close: bool = False, silent: bool = False) -> None:
        import socket

        self.answer, self.close, self.silent = answer, close, silent
        self.connections = 0
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/raw"
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        import socket

        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: Any) -> None:
        with conn, contextlib.suppress(OSError):
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.requests += 1
                if self.silent:
                    time.sleep(1.0)
                    return
                # Seven bytes at a time: the parser must cope with any split.
                for start in range(0, len(self.answer), 7):
                    conn.sendall(self.answer[start : start + 7])
                    time.sleep(0.001)
                if self.close:
                    return

    def shutdown(self) -> None:
        import socket

        # shutdown() wakes the accept() of the other thread; close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def raw_server(answer: bytes, **options: Any) -> Iterator[RawServer]:
    server = RawServer(answer, **options)
    try:
        yield server
    finally:
        server.shutdown()


def post_twice(poster: HttpPoster, url: str) -> list[HttpAnswer]:
    async def run() -> list[HttpAnswer]:
        try:
            return [
                await poster.post(url, what="webhook", headers={"X-A": "b"}, body=b"{}")
                for _ in range(2)
            ]
        finally:
            await poster.aclose()

    return asyncio.run(run())


class TestHttpAnswers:
    @pytest.mark.parametrize(
        ("answer", "expected", "connections"),
        [
            # Chunked body (with an extension and a trailer): read to its end, connection kept.
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;x=y\r\nhello\r\n11\r\n" + b"z" * 17 + b"\r\n0\r\nX-Trailer: t\r\n\r\n",
                (200, None),
                1,
            ),
            (
                b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 3\r\n\r\nabc",
                (503, "7"),
                1,
            ),
            # An interim 100 Continue, then the answer without a body.
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", (204, None), 1),
            (
                b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                (201, None),
                2,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", (200, None), 2),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
                (200, None),
                1,
            ),
        ],
    )
    def test_answers_are_read_whole_and_connections_kept_when_allowed(
        self, answer: bytes, expected: tuple[int, str | None], connections: int
    ) -> None:
        close = connections == 2
        with raw_server(answer, close=close) as server:
            answers = post_twice(HttpPoster(timeout_s=3.0), server.url)
        assert [(a.status, a.retry_after) for a in answers] == [expected, expected]
        assert (server.requests, server.connections) == (2, connections)

    def test_a_body_until_the_server_closes_is_read(self) -> None:
        with raw_server(b"HTTP/1.0 202 Accepted\r\n\r\nbody to the end", close=True) as server:
            answers = post_twice(HttpPoster(timeout_s=3.0), server.url)
        assert [a.status for a in answers] == [202, 202]
        assert server.connections == 2

    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            (b"220 smtp.example ESMTP\r\n\r\n", "BadStatusLine"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "HTTPException"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "IncompleteRead"),
        ],
    )
    def test_broken_answers_are_transient(self, answer: bytes, error: str) -> None:
        with (
            raw_server(answer, close=True) as server,
            pytest.raises(TransientDeliveryError, match=rf"webhook unreachable \({error}\)"),
        ):
            post(HttpPoster(timeout_s=3.0), server.url)

    def test_a_receiver_that_does_not_answer_times_out(self) -> None:
        with raw_server(b"", silent=True) as server:
            started = time.monotonic()
            with pytest.raises(TransientDeliveryError, match=r"webhook timed out"):
                post(HttpPoster(timeout_s=0.3), server.url)
            assert time.monotonic() - started < 0.9
