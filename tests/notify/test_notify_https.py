"""Webhooks over HTTPS: delivered to a real local TLS receiver whose certificate is trusted."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import uvloop

from api.notify.channels import (
    HttpPoster,
    Message,
    WebhookChannel,
    verify_signature,
    webhook_body,
    webhook_signing_key,
)
from api.notify.errors import PermanentDeliveryError, TransientDeliveryError
from api.settings import Settings
from tests.notify.conftest import (
    START,
    HttpReceiver,
    Received,
    self_signed_certificate,
    serve,
)
from tests.notify.test_notify_batching import post, post_twice


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def _https_receiver(
    certificate: tuple[Path, Path], *, drop_idle: bool = False
) -> Generator[HttpReceiver, None, None]:
    receiver = HttpReceiver(default=lambda _: (200, {}, b'{"ok": true}'))
    yield from serve(receiver, drop_idle=drop_idle, tls=_server_context(certificate))


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, where the receivers listen."""
    return self_signed_certificate(tmp_path)


@pytest.fixture
def trusted(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context trusting only that certificate (verification and host name check on)."""
    return ssl.create_default_context(cafile=certificate[0])


@pytest.fixture
def https_webhook(certificate: tuple[Path, Path]) -> Iterator[HttpReceiver]:
    """An HTTPS webhook receiver answering 200 unless scripted otherwise."""
    yield from _https_receiver(certificate)


class TestHttpsDelivery:
    def test_a_signed_webhook_arrives_whole_and_answers_are_classified_as_over_http(
        self, settings: Settings, https_webhook: HttpReceiver, trusted: ssl.SSLContext
    ) -> None:
        assert https_webhook.url.startswith("https://127.0.0.1:")
        poster = HttpPoster(timeout_s=3.0, tls=trusted)
        channel = WebhookChannel(settings, poster)
        message = Message(
            delivery_id="d-https-1",
            alert_id=uuid.uuid4(),
            member_id=uuid.uuid4(),
            kind="alert",
            payload={"subject": "ern alert", "text": "Help needed near you."},
            attempt=1,
        )
        contact = {"webhook_url": f"{https_webhook.url}/hook?m=1"}

        async def run() -> list[BaseException | None]:
            outcomes: list[BaseException | None] = []
            try:
                for status in (None, 500, 404):
                    if status is not None:
                        https_webhook.then(status)
                    try:
                        await channel.send(message, contact, now=START)
                    except (TransientDeliveryError, PermanentDeliveryError) as exc:
                        outcomes.append(exc)
                    else:
                        outcomes.append(None)
            finally:
                await poster.aclose()
            return outcomes

        sent, busy, gone = asyncio.run(run())
        assert sent is None
        assert isinstance(busy, TransientDeliveryError)
        assert str(busy) == "webhook answered HTTP 500"
        assert isinstance(gone, PermanentDeliveryError)
        assert str(gone) == "webhook answered HTTP 404"

        assert len(https_webhook.requests) == 3
        request = https_webhook.requests[0]
        assert request.path == "/hook?m=1"
        assert request.body == webhook_body(message, now=START)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-ern-delivery"] == "d-https-1"
        key = webhook_signing_key(settings, message.member_id)
        assert verify_signature(key, request.body, request.headers["x-ern-signature"])

    def test_posts_to_one_origin_reuse_one_tls_connection(
        self, https_webhook: HttpReceiver, trusted: ssl.SSLContext
    ) -> None:
        answers = post_twice(HttpPoster(timeout_s=3.0, tls=trusted), f"{https_webhook.url}/k")
        assert [a.status for a in answers] == [200, 200]
        assert [(r.path, r.body, r.headers["x-a"]) for r in https_webhook.requests] == [
            ("/k", b"{}", "b"),
            ("/k", b"{}", "b"),
        ]
        # One client port: the second request went over the first one's TLS connection.
        assert len({r.client for r in https_webhook.requests}) == 1

    def test_tls_connections_the_receiver_dropped_are_replaced(
        self, certificate: tuple[Path, Path], trusted: ssl.SSLContext
    ) -> None:
        receivers = _https_receiver(certificate, drop_idle=True)
        dropping = next(receivers)
        try:
            poster = HttpPoster(timeout_s=3.0, tls=trusted)

            async def run() -> list[int]:
                try:
                    statuses = []
                    for _ in range(4):
                        answer = await poster.post(
                            f"{dropping.url}/d", what="webhook", headers={}, body=b"{}"
                        )
                        statuses.append(answer.status)
                        # Half the time the loop is blocked while the server closes: the close
                        # is usually seen only once the next request is written (sent again).
                        if len(statuses) % 2:
                            time.sleep(0.05)
                        else:
                            await asyncio.sleep(0.05)
                    return statuses
                finally:
                    await poster.aclose()

            assert asyncio.run(run()) == [200, 200, 200, 200]
        finally:
            receivers.close()
        assert len(dropping.requests) == 4
        assert len({r.client for r in dropping.requests}) == 4


class TestHttpsRefusals:
    def test_a_certificate_for_another_host_is_refused_though_it_is_trusted(
        self, tmp_path: Path
    ) -> None:
        # Trusted as an issuer, but made for 127.0.0.2 while the URL says 127.0.0.1.
        elsewhere = self_signed_certificate(tmp_path, "127.0.0.2")
        receivers = _https_receiver(elsewhere)
        receiver = next(receivers)
        try:
            poster = HttpPoster(timeout_s=3.0, tls=ssl.create_default_context(cafile=elsewhere[0]))
            with pytest.raises(
                TransientDeliveryError, match=r"unreachable \(SSLCertVerificationError\)"
            ) as refused:
                post(poster, f"{receiver.url}/h")
        finally:
            receivers.close()
        cause = refused.value.__cause__
        assert isinstance(cause, ssl.SSLCertVerificationError)
        assert "mismatch" in cause.verify_message
        assert receiver.requests == []


# Event loops the poster runs on: the worker's (uvloop) and asyncio's own (tests, tools).
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _read_request(tls: ssl.SSLSocket) -> Received | None:
    """One POST from ``tls`` (head and Content-Length body), or None at the end of the stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        body += tls.recv(65536)
    return Received(lines[0].split(" ")[1], headers, body, client=tls.getpeername()[:2])


def _close_notify_receiver(
    certificate: tuple[Path, Path], *, idle_s: float, notified: threading.Event
) -> Generator[HttpReceiver, None, None]:
    """An HTTPS receiver that answers one request per connection (kept alive, Content-Length),
    then after ``idle_s`` sends TLS close_notify (an SSL unwrap, as a server closing an idle
    connection) and leaves the TCP connection open until the generator ends; sets ``notified``.
    """
    receiver = HttpReceiver(default=lambda _: (200, {}, b'{"ok": true}'))
    context = _server_context(certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    done = threading.Event()
    held: list[socket.socket] = []

    def answer_once(raw: socket.socket) -> None:
        held.append(raw)
        with contextlib.suppress(OSError):  # ssl.SSLError included
            tls = context.wrap_socket(raw, server_side=True)
            held.append(tls)
            request = _read_request(tls)
            if request is None:
                return
            status, _, content = receiver.answer(request)
            head = f"HTTP/1.1 {status} OK\r\nContent-Length: {len(content)}\r\n\r\n"
            tls.sendall(head.encode() + content)
            time.sleep(idle_s)
            tls.settimeout(2.0)  # unwrap waits for the client's close_notify in reply
            try:
                held.append(tls.unwrap())  # plain TCP from here on: left open, never read
            finally:
                notified.set()

    def accept() -> None:
        while not done.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue  # to see whether the test is over
            threading.Thread(target=answer_once, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    receiver.url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    try:
        yield receiver
    finally:
        done.set()
        thread.join(5)
        listener.close()
        for sock in held:
            sock.close()


class TestHttpsCloseNotify:
    """A receiver that ends a kept-alive TLS connection with close_notify but leaves TCP open:
    the next post to it goes over a new connection at once, neither failing nor waiting for
    the poster's timeout."""

    @pytest.mark.parametrize("loop", LOOPS)
    @pytest.mark.parametrize(
        ("idle_s", "pause"),
        [
            # close_notify while the connection idles and the loop reads it (and answers it).
            pytest.param(0.05, "loop-free", id="while-idle"),
            # The loop is blocked when close_notify comes: seen only once the request is written.
            pytest.param(0.05, "loop-blocked", id="while-idle-loop-blocked"),
            # close_notify right behind the response; the next post follows at once.
            pytest.param(0.0, "none", id="with-the-response"),
        ],
    )
    def test_the_next_post_goes_over_a_new_connection_without_waiting(
        self,
        certificate: tuple[Path, Path],
        trusted: ssl.SSLContext,
        loop: str,
        idle_s: float,
        pause: str,
    ) -> None:
        notified = threading.Event()
        receivers = _close_notify_receiver(certificate, idle_s=idle_s, notified=notified)
        receiver = next(receivers)
        # A hang would last 30 s; the guard below makes it fail in 5 s.
        poster = HttpPoster(timeout_s=30.0, tls=trusted)
        url = f"{receiver.url}/n"

        async def run() -> list[int]:
            try:
                first = await poster.post(url, what="webhook", headers={}, body=b"{}")
                if pause == "loop-free":
                    # Set once the client's close_notify came back: the loop saw the server's.
                    assert await asyncio.to_thread(notified.wait, 5.0)
                    await asyncio.sleep(0.05)  # and closed the connection
                elif pause == "loop-blocked":
                    time.sleep(idle_s + 0.2)
                async with asyncio.timeout(5.0):
                    second = await poster.post(url, what="webhook", headers={}, body=b"{}")
                return [first.status, second.status]
            finally:
                await poster.aclose()

        try:
            with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
                assert runner.run(run()) == [200, 200]
            assert notified.wait(5.0)
        finally:
            receivers.close()
        assert [r.path for r in receiver.requests] == ["/n", "/n"]
        assert len({r.client for r in receiver.requests}) == 2
