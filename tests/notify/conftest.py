"""Notify fixtures: real local receivers (HTTP webhook, Twilio-like SMS gateway, aiosmtpd SMTP),
committed members with contact details, and outbox workers on the test database."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from api.clock import ManualClock
from api.database import make_session_factory, transaction
from api.members.crypto import contact_cipher, hash_token, new_token
from api.members.models import ApiToken, Member
from api.notify.models import Delivery
from api.notify.service import enqueue
from api.notify.worker import OutboxWorker
from api.settings import Settings

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SMS_SID = "ACtest"
SMS_TOKEN = "sms-token-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    """One request a local HTTP receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int] = ("", 0)  # the sender's address: one port per connection

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class HttpReceiver:
    """A real HTTP server on 127.0.0.1 recording every POST; answers: the script, then default."""

    default: Callable[[Received], Answer]
    requests: list[Received] = field(default_factory=list)
    script: deque[Answer] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, request: Received) -> Answer:
        with self.lock:
            self.requests.append(request)
            if self.script:
                return self.script.popleft()
        return self.default(request)

    def then(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next request with ``status`` (and headers)."""
        with self.lock:
            self.script.append((status, headers or {}, b'{"error": "scripted"}'))

    def ids(self) -> list[str]:
        """X-Ern-Delivery of every request received, in order."""
        with self.lock:
            return [r.headers.get("x-ern-delivery", "") for r in self.requests]


def serve(
    receiver: HttpReceiver, *, drop_idle: bool = False, tls: ssl.SSLContext | None = None
) -> Iterator[HttpReceiver]:
    """Run ``receiver`` on a real HTTP/1.1 server until the generator ends.

    ``drop_idle``: close every connection after its response without saying so (no
    ``Connection: close``), as servers do when a kept-alive connection idles out.
    ``tls``: a server context; the receiver then speaks HTTPS only (its url says https).
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers_in = {k.lower(): v for k, v in self.headers.items()}
            request = Received(self.path, headers_in, body, client=self.client_address[:2])
            status, headers, content = receiver.answer(request)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            if drop_idle:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            return None

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # the default 5 drops connections when many senders open at once

    server = Server(("127.0.0.1", 0), Handler)
    if tls is not None:
        # The handshake runs in accept(): a client that refuses it only fails its own accept.
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    receiver.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def webhook() -> Iterator[HttpReceiver]:
    """A webhook receiver answering 200 unless scripted otherwise."""
    yield from serve(HttpReceiver(default=lambda _: (200, {}, b'{"ok": true}')))


def _twilio(request: Received) -> Answer:
    expected_path = f"/2010-04-01/Accounts/{SMS_SID}/Messages.json"
    auth = request.headers.get("authorization", "")
    expected_auth = "Basic " + base64.b64encode(f"{SMS_SID}:{SMS_TOKEN}".encode()).decode()
    if request.path != expected_path:
        return 404, {}, b'{"code": 20404, "message": "not found"}'
    if auth != expected_auth:
        return 401, {}, b'{"code": 20003, "message": "authenticate"}'
    form = request.form()
    if not form.get("To") or not form.get("Body"):
        return 400, {}, b'{"code": 21604, "message": "To and Body are required"}'
    sid = "SM" + uuid.uuid4().hex
    return 201, {}, json.dumps({"sid": sid, "status": "queued", "to": form["To"]}).encode()


@pytest.fixture
def sms_gateway() -> Iterator[HttpReceiver]:
    """A Twilio-compatible Messages.json endpoint (checks path, basic auth and required fields)."""
    yield from serve(HttpReceiver(default=_twilio))


@dataclass
class SmtpInbox:
    """Mail received by a real aiosmtpd server."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    port: int = 0
    # The client address of each message: one port per connection.
    peers: list[tuple[str, int]] = field(default_factory=list)
    # Close the connection after answering each message (as a server whose idle timer fired).
    drop_after_each: bool = False
    # Seconds before each message is accepted (a slow relay: the client's connections pile up).
    delay_s: float = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        content = envelope.original_content or envelope.content
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(content))
        )
        self.peers.append(tuple(session.peer[:2]))
        if self.drop_after_each:
            # After the reply below is written: transports flush before they close.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[SmtpInbox]:
    """An aiosmtpd server on 127.0.0.1."""
    inbox = SmtpInbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def notify_settings(
    settings: Settings, smtp_server: SmtpInbox, sms_gateway: HttpReceiver
) -> Settings:
    """Settings pointing at the local SMTP server and SMS gateway; quick polls, short timeouts."""
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_server.port,
            "smtp_from": "alerts@ern.test",
            "sms_base_url": sms_gateway.url,
            "sms_account_sid": SMS_SID,
            "sms_auth_token": SecretStr(SMS_TOKEN),
            "sms_from": "+358400000000",
            "delivery_timeout_s": 3.0,
            "delivery_max_attempts": 4,
            "backoff_base_s": 2.0,
            "backoff_cap_s": 300.0,
            "worker_poll_s": 0.05,
        }
    )


@pytest.fixture
def committed(engine: Engine) -> sessionmaker[Session]:
    """Sessions that really commit (workers and SKIP LOCKED need data other connections see)."""
    return make_session_factory(engine)


MakeMember = Callable[..., Member]


@pytest.fixture
def make_member(committed: sessionmaker[Session], settings: Settings) -> Iterator[MakeMember]:
    """Factory: a committed member with these contact details; deleted (with its outbox) after."""
    made: list[uuid.UUID] = []
    cipher = contact_cipher(settings)

    def make(*, roles: tuple[str, ...] = (), **contact: str) -> Member:
        member = Member(
            handle=f"notify-{uuid.uuid4().hex[:10]}",
            roles=list(roles),
            contact_ciphertext=cipher.encrypt(contact) if contact else None,
        )
        with transaction(committed) as session:
            session.add(member)
        made.append(member.id)
        return member

    yield make
    if made:
        with transaction(committed) as session:
            session.execute(delete(Member).where(Member.id.in_(made)))


@pytest.fixture
def token_for(committed: sessionmaker[Session]) -> Callable[[Member], str]:
    """A bearer token for a committed member (removed with the member)."""

    def issue(member: Member) -> str:
        token = new_token()
        with transaction(committed) as session:
            session.add(ApiToken(member_id=member.id, token_hash=hash_token(token)))
        return token

    return issue


Enqueue = Callable[..., uuid.UUID]


@pytest.fixture
def enqueue_committed(
    committed: sessionmaker[Session], notify_settings: Settings, clock: ManualClock
) -> Enqueue:
    """Enqueue an alert message to members and commit, as POST /v1/alerts does; the alert id."""

    def run(*members: Member, kind: str = "alert", alert_id: uuid.UUID | None = None) -> uuid.UUID:
        alert_id = alert_id or uuid.uuid4()
        payload = {
            "subject": "ern alert: personal, 2 needed",
            "text": "Help needed near you.",
            "alert": {"alert_id": str(alert_id), "kind": "personal"},
        }
        with transaction(committed) as session:
            for member in members:
                enqueue(
                    session,
                    notify_settings,
                    member=member,
                    alert_id=alert_id,
                    message_kind=kind,
                    payload=payload,
                    now=clock.now(),
                )
        return alert_id

    return run


@pytest.fixture
def make_worker(
    committed: sessionmaker[Session], notify_settings: Settings, clock: ManualClock
) -> Iterator[Callable[..., OutboxWorker]]:
    """Factory of outbox workers on the test database and the manual clock; all stopped after."""
    workers: list[OutboxWorker] = []

    def make(settings: Settings | None = None, **options: Any) -> OutboxWorker:
        worker = OutboxWorker(committed, settings or notify_settings, clock=clock, **options)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout_s=10)


def deliveries(factory: sessionmaker[Session], alert_id: uuid.UUID) -> list[Delivery]:
    """The outbox rows of one alert, freshly read."""
    with factory() as session:
        return list(
            session.scalars(
                select(Delivery).where(Delivery.alert_id == alert_id).order_by(Delivery.id)
            )
        )


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP address SAN) and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
