"""Delivery channels: HMAC-signed webhook, SMTP e-mail and a Twilio-compatible SMS gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import smtplib
import socket
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import httpx

from api.members.crypto import derive_key
from api.notify.errors import PermanentDeliveryError, TransientDeliveryError
from api.settings import HTTP_CONNECTIONS_PER_HOST, Settings, trust_ca_file

_WEBHOOK_KEY_INFO = b"ern webhook signature v1"
SIGNATURE_HEADER = "X-Ern-Signature"
DELIVERY_HEADER = "X-Ern-Delivery"
USER_AGENT = "ern-notify/0.1"
# Twilio concatenates up to 1600 characters into one message.
SMS_MAX_CHARS = 1600
MAX_ERROR_CHARS = 500

# Delivery ids are ~90 characters without spaces: allow them on one header line, unencoded.
_MAIL_POLICY = policy.default.clone(max_line_length=998)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_NUMBER_RE = re.compile(r"\+?\d[\d ()-]{6,}\d")


@dataclass(frozen=True)
class Message:
    """What one attempt sends: the stable delivery id, the alert, the kind and the payload."""

    delivery_id: str
    alert_id: uuid.UUID
    member_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempt: int

    @property
    def subject(self) -> str:
        """The payload's subject, or a generic one."""
        return str(self.payload.get("subject") or f"ern: {self.kind}")

    @property
    def text(self) -> str:
        """The payload's plain text, or its JSON when it has none."""
        text = self.payload.get("text")
        return str(text) if text else json.dumps(self.payload, sort_keys=True)


class Channel(Protocol):
    """Sends one message to one destination; raises a DeliveryError on failure.

    Runs on the outbox worker's event loop: what blocks (SMTP) goes to the loop's executor.
    """

    name: str

    async def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None: ...


def scrub(text: str, *secrets: str | None) -> str:
    """An error text fit for coordinators: no destinations, e-mail addresses, URLs or numbers."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = _URL_RE.sub("<url>", text)
    text = _EMAIL_RE.sub("<email>", text)
    text = _NUMBER_RE.sub("<number>", text)
    return text[:MAX_ERROR_CHARS]


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from Retry-After (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class HttpAnswer:
    """What a receiver answered: the status and its Retry-After header."""

    status: int
    retry_after: str | None = None


def check_http_response(answer: HttpAnswer, *, what: str, now: datetime) -> None:
    """Nothing for a 2xx; a transient error for 408/429/5xx; a permanent one for anything else."""
    status = answer.status
    if 200 <= status < 300:
        return
    retry_after_s = parse_retry_after(answer.retry_after, now=now)
    reason = f"{what} answered HTTP {status}"
    if status in (408, 429) or status >= 500:
        if retry_after_s is not None:
            reason += f" (Retry-After {retry_after_s:g} s)"
        raise TransientDeliveryError(reason, retry_after_s=retry_after_s)
    if 300 <= status < 400:
        reason += " (redirects are not followed)"
    raise PermanentDeliveryError(reason)


# scheme, host, port, and whether only public addresses may be reached (kept apart).
Origin = tuple[str, str, int, bool]
# A kept-alive connection the server closed while idle: the request never reached it.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
# http.client refuses these in a request target or Host (request splitting).
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_MAX_HEAD = 65536
# Entries kept by the memos of parsed URLs and member keys before they start afresh.
_MEMO_SIZE = 4096
# scheme, host, port, request target, Host header.
_Target = tuple[str, str, int, str, str]
# Response reading states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_EOF = range(6)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses the answer (status, headers, body).

    The body is read and dropped: Content-Length, chunked, or until the server closes.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[HttpAnswer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = _HEAD
        self._left = 0
        self._answer: HttpAnswer | None = None
        self.got_bytes = False
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.got_bytes = True
        self._buffer += data
        try:
            self._advance()
        except (http.client.HTTPException, ValueError) as exc:
            self._fail(exc if isinstance(exc, http.client.HTTPException) else _bad(exc))

    def eof_received(self) -> bool:
        self.closed = True
        return False  # close the transport; connection_lost finishes or fails the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is not None:
            self._fail(exc)
        elif self._state == _UNTIL_EOF:
            self._finish()
        elif not self.got_bytes:
            self._fail(http.client.RemoteDisconnected("closed without a response"))
        else:
            self._fail(http.client.IncompleteRead(b""))

    # --- one exchange -------------------------------------------------------------------------

    def request(self, data: bytes, *, timeout_s: float) -> asyncio.Future[HttpAnswer]:
        """Send one request; the future resolves to the answer (or an error) within timeout_s."""
        waiter = self._waiter = self._loop.create_future()
        self._timer = self._loop.call_later(timeout_s, self._time_out)
        self._state = _HEAD
        self.got_bytes = False
        self._answer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            # Closed under us: as stale as a connection the server dropped (retried once).
            self._fail(ConnectionResetError("connection closed before the request"))
        else:
            transport.write(data)
        return waiter

    def abort(self) -> None:
        """Close at once (no TLS close_notify round trip)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _time_out(self) -> None:
        self._fail(TimeoutError())

    def _fail(self, exc: BaseException) -> None:
        if self._timer is not None:
            self._timer.cancel()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._buffer:  # more than one answer: not something to send to again
            self.keep_alive = False
            self._buffer.clear()
        waiter = self._waiter
        assert waiter is not None and self._answer is not None
        if not waiter.done():
            waiter.set_result(self._answer)

    def _advance(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > _MAX_HEAD:
                        raise http.client.LineTooLong("response head")
                    return
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                self._head(head)
                if self._answer is None:
                    continue  # an interim 1xx answer; the real one follows
                if self._state == _HEAD:
                    self._finish()  # no body
                    return
            elif state in (_LENGTH, _CHUNK_DATA):
                taken = min(len(buffer), self._left)
                del buffer[:taken]
                self._left -= taken
                if self._left:
                    return
                if state == _LENGTH:
                    self._finish()
                    return
                self._state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILER):
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > _MAX_HEAD:
                        raise http.client.LineTooLong("chunk line")
                    return
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                if state == _TRAILER:
                    if not line:
                        self._finish()
                        return
                    continue
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size < 0:
                    raise ValueError("negative chunk size")
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._state, self._left = _CHUNK_DATA, size + 2  # the chunk and its CRLF
            else:  # _UNTIL_EOF
                buffer.clear()
                return

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(lines[0][:64].decode("latin-1"))
        status = int(code)
        if 100 <= status < 200:
            if status == 101:
                raise http.client.BadStatusLine("101 Switching Protocols")
            return
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise http.client.BadStatusLine("header line without a colon")
            name = name.strip().lower()
            if name in fields and name in (b"content-length", b"transfer-encoding"):
                raise ValueError("repeated framing header")
            fields[name] = value.strip()
        connection = fields.get(b"connection", b"").lower()
        if version == b"HTTP/1.1":
            self.keep_alive = b"close" not in connection
        else:
            self.keep_alive = b"keep-alive" in connection
        retry_after = fields.get(b"retry-after")
        self._answer = HttpAnswer(
            status, retry_after.decode("latin-1") if retry_after is not None else None
        )
        coding = fields.get(b"transfer-encoding")
        length = fields.get(b"content-length")
        if status in (204, 304):
            self._state = _HEAD
        elif coding is not None:
            if coding.lower().rsplit(b",", 1)[-1].strip() == b"chunked":
                self._state = _CHUNK_SIZE
            else:
                self._state, self.keep_alive = _UNTIL_EOF, False
        elif length is not None:
            if not length.isdigit():
                raise ValueError("bad Content-Length")
            self._left = int(length)
            self._state = _LENGTH if self._left else _HEAD
        else:
            self._state, self.keep_alive = _UNTIL_EOF, False


def _bad(exc: ValueError) -> http.client.HTTPException:
    bad = http.client.HTTPException(str(exc))
    bad.__cause__ = exc
    return bad


@dataclass
class _Turns:
    """Requests to one origin: a turn each in flight (the semaphore), and how many use it."""

    semaphore: asyncio.Semaphore
    users: int = 0


class HttpPoster:
    """POSTs from one asyncio event loop over kept-alive HTTP/1.1 connections.

    A small client of our own on asyncio.Protocol: per delivery it costs a fraction of the
    CPU of http.client in a thread per request in flight (and a tenth of httpx's). Several
    connections per origin (one per request in flight, at most ``per_origin``: more wait up
    to ``timeout_s`` for a turn), at most ``max_idle`` kept idle, for ``idle_s``. No proxies
    from the environment, no redirects, no compression.

    ``tls``: the context https connections use, as given (its CAs, its host name check);
    by default certifi's CAs with verification on, whatever SSL_CERT_* say.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        max_idle: int = 32,
        idle_s: float = 4.0,
        tls: ssl.SSLContext | None = None,
        per_origin: int = HTTP_CONNECTIONS_PER_HOST,
    ) -> None:
        self._timeout_s = timeout_s
        self._max_idle = max_idle
        self._per_origin = per_origin
        # Turns of origins with requests in flight or waiting (dropped when none are left).
        self._turns: dict[Origin, _Turns] = {}
        self._idle_s = idle_s
        # Idle connections by origin (most recent last), and all of them oldest first.
        self._idle: dict[Origin, list[_Connection]] = {}
        self._lru: OrderedDict[_Connection, Origin] = OrderedDict()
        self._tls = tls
        # Parsed URLs (members' webhooks, the SMS gateway): the same ones come again and again.
        self._targets: dict[str, _Target | str] = {}

    async def post(
        self,
        url: str,
        *,
        what: str,
        headers: dict[str, str],
        body: bytes,
        public_only: bool = False,
    ) -> HttpAnswer:
        """POST ``body``; the answer, its body read so that the connection can be reused.

        ``public_only``: the host must resolve to public addresses only (PermanentDeliveryError
        otherwise), and the connection goes to the address that was checked, so a second
        DNS answer cannot redirect it; TLS still verifies the host name.
        """
        target = self._targets.get(url)
        if target is None:
            target = _parse_target(url)
            if len(self._targets) >= _MEMO_SIZE:
                self._targets.clear()
            self._targets[url] = target
        if isinstance(target, str):
            msg = f"{what} URL is not usable ({target})"
            raise PermanentDeliveryError(msg)
        scheme, host, port, path, authority = target
        origin = (scheme, host, port, public_only)
        request = _request_bytes(path, authority, headers, body)
        turns = self._turns.get(origin)
        if turns is None:
            turns = self._turns[origin] = _Turns(asyncio.Semaphore(self._per_origin))
        turns.users += 1
        try:
            if turns.semaphore.locked():
                try:
                    async with asyncio.timeout(self._timeout_s):
                        await turns.semaphore.acquire()
                except TimeoutError:
                    msg = f"{what} busy: {self._per_origin} requests to its host in flight"
                    raise TransientDeliveryError(msg) from None
            else:
                await turns.semaphore.acquire()  # free: returns at once
            try:
                return await self._send(origin, request, what=what)
            finally:
                turns.semaphore.release()
        finally:
            turns.users -= 1
            if not turns.users:
                del self._turns[origin]  # members' URLs come and go: nothing left behind

    async def _send(self, origin: Origin, request: bytes, *, what: str) -> HttpAnswer:
        try:
            conn = self._take(origin)
            if conn is not None:
                try:
                    return await self._exchange(origin, conn, request)
                except _STALE:
                    if conn.got_bytes:
                        raise
                    # Closed while idle: send once more on a new connection.
            conn = await self._connect(origin, what=what)
            return await self._exchange(origin, conn, request)
        except TimeoutError as exc:
            msg = f"{what} timed out ({type(exc).__name__})"
            raise TransientDeliveryError(msg) from exc
        # Before ValueError: a refused certificate is both, and the receiver may fix it.
        except (OSError, http.client.HTTPException) as exc:
            msg = f"{what} unreachable ({type(exc).__name__})"
            raise TransientDeliveryError(msg) from exc
        except ValueError as exc:
            msg = f"{what} URL is not usable ({type(exc).__name__})"
            raise PermanentDeliveryError(msg) from exc

    async def _exchange(self, origin: Origin, conn: _Connection, request: bytes) -> HttpAnswer:
        try:
            answer = await conn.request(request, timeout_s=self._timeout_s)
        except BaseException:
            conn.abort()
            raise
        if conn.keep_alive and not conn.closed:
            self._keep(origin, conn)
        else:
            conn.abort()
        return answer

    async def _connect(self, origin: Origin, *, what: str) -> _Connection:
        scheme, host, port, public_only = origin
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                # httpx's context (certifi's CAs, verification on, no SSL_CERT_* from the
                # environment): the same trust as the httpx client this replaced.
                self._tls = httpx.create_ssl_context(trust_env=False)
            tls = self._tls
        async with asyncio.timeout(self._timeout_s):
            address = (host, port)
            if public_only:
                # getaddrinfo blocks: off the loop.
                check = functools.partial(public_address, host, port, what=what)
                address = await loop.run_in_executor(None, check)
            _, conn = await loop.create_connection(
                lambda: _Connection(loop),
                address[0],
                address[1],
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
        return conn

    def _take(self, origin: Origin) -> _Connection | None:
        kept = self._idle.get(origin)
        while kept:
            conn = kept.pop()
            del self._lru[conn]
            if not kept:
                del self._idle[origin]  # members' URLs come and go: no empty lists left behind
            if not conn.closed and time.monotonic() - conn.idle_since <= self._idle_s:
                return conn
            conn.abort()
        return None

    def _keep(self, origin: Origin, conn: _Connection) -> None:
        now = time.monotonic()
        # Oldest first: close what idled out or is one connection too many.
        lru = self._lru
        while lru:
            oldest, oldest_origin = next(iter(lru.items()))
            if len(lru) < self._max_idle and now - oldest.idle_since <= self._idle_s:
                break
            del lru[oldest]
            kept = self._idle[oldest_origin]
            kept.remove(oldest)
            if not kept:
                del self._idle[oldest_origin]
            oldest.abort()
        conn.idle_since = now
        lru[conn] = origin
        self._idle.setdefault(origin, []).append(conn)

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        for conn in self._lru:
            conn.abort()
        self._lru.clear()
        self._idle.clear()
        # Let the transports finish closing before the loop does.
        await asyncio.sleep(0)
        await asyncio.sleep(0)


def _parse_target(url: str) -> _Target | str:
    """Scheme, host, port, request target and Host header of a URL, or why it is not usable."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port
        host = parts.hostname
        if host:
            # As http.client: IDNA for non-ASCII names (a ValueError if it cannot).
            host = host if host.isascii() else host.encode("idna").decode("ascii")
    except ValueError as exc:
        return type(exc).__name__
    if scheme not in ("http", "https") or not host:
        return "UnsupportedProtocol"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # No spaces or control characters (request splitting) and ASCII only, as http.client.
    if _UNSAFE.search(path) or _UNSAFE.search(host) or not path.isascii():
        return "InvalidURL"
    default_port = 443 if scheme == "https" else 80
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != default_port:
        authority += f":{port}"
    return scheme, host, port or default_port, path, authority


def _request_bytes(target: str, authority: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {target} HTTP/1.1", f"Host: {authority}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + body


def public_address(host: str, port: int, *, what: str) -> tuple[str, int]:
    """The first address of ``host``, if every address it resolves to is public.

    Refused (PermanentDeliveryError): loopback, private (RFC 1918, fc00::/7), link-local
    (cloud metadata services live there), shared (100.64/10), multicast, reserved and
    unspecified addresses, also as IPv4-mapped IPv6. A resolver failure is an OSError
    (transient: the name may resolve later).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [info[4][:2] for info in infos]
    for ip, _ in addresses:
        parsed = ipaddress.ip_address(str(ip).split("%", 1)[0])
        mapped = getattr(parsed, "ipv4_mapped", None)
        checked = [parsed] if mapped is None else [parsed, mapped]
        # is_global leaves multicast in (224.0.0.0/4 is globally scoped); a webhook is unicast.
        if any(not one.is_global or one.is_multicast for one in checked):
            msg = f"{what} host resolves to a non-public address; refused"
            raise PermanentDeliveryError(msg)
    ip, resolved_port = addresses[0]
    return str(ip), int(resolved_port)


def webhook_signing_key(settings: Settings, member_id: uuid.UUID) -> bytes:
    """One member's X-Ern-Signature key.

    HKDF-SHA256(ERN_SECRET_KEY, info="ern webhook signature v1:<member id>"): each member
    verifies with a key of their own (GET /v1/members/me/webhook-key), so no member can sign
    messages that another member's receiver would accept.
    """
    return _member_key(settings.secret_bytes(), member_id)


def _member_key(secret: bytes, member_id: uuid.UUID) -> bytes:
    return derive_key(secret, info=_WEBHOOK_KEY_INFO + b":" + str(member_id).encode())


def sign(key: bytes, body: bytes) -> str:
    """The X-Ern-Signature value of a body: "sha256=" + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, body: bytes, header: str | None) -> bool:
    """Whether an X-Ern-Signature header matches the raw body (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(key, body), header)


def webhook_body(message: Message, *, now: datetime) -> bytes:
    """The exact bytes POSTed to a webhook (and signed)."""
    document = {
        "delivery_id": message.delivery_id,
        "alert_id": str(message.alert_id),
        "kind": message.kind,
        "data": message.payload,
        "sent_at": now.isoformat(),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class WebhookChannel:
    """POSTs the message as signed JSON to the member's webhook_url."""

    name = "webhook"

    def __init__(self, settings: Settings, poster: HttpPoster) -> None:
        self._secret = settings.secret_bytes()
        self._poster = poster
        # HKDF per send was a tenth of a delivery's CPU; a member's key never changes.
        self._keys: dict[uuid.UUID, bytes] = {}
        # Members choose webhook URLs; the operator chooses the SMS gateway's (trusted).
        self._public_only = not settings.webhook_allow_private

    async def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
        url = contact.get("webhook_url")
        if not url:
            msg = "the member has no webhook URL any more"
            raise PermanentDeliveryError(msg)
        if urlsplit(str(url)).scheme not in ("http", "https"):
            msg = "the member's webhook URL is not http(s)"
            raise PermanentDeliveryError(msg)
        body = webhook_body(message, now=now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self._key(message.member_id), body),
            DELIVERY_HEADER: message.delivery_id,
        }
        answer = await self._poster.post(
            str(url), what="webhook", headers=headers, body=body, public_only=self._public_only
        )
        check_http_response(answer, what="webhook", now=now)

    def _key(self, member_id: uuid.UUID) -> bytes:
        key = self._keys.get(member_id)
        if key is None:
            if len(self._keys) >= _MEMO_SIZE:
                self._keys.clear()
            key = self._keys[member_id] = _member_key(self._secret, member_id)
        return key


# Every alert SMS ends with how to answer it by SMS (POST /v1/sms/inbound reads the reply).
SMS_REPLY_HINT = "Reply 1 to go, 2 if you can't"


def sms_text(message: Message) -> str:
    """The SMS body: the text within SMS_MAX_CHARS; an alert's always ends with SMS_REPLY_HINT."""
    if message.kind != "alert":
        return message.text[:SMS_MAX_CHARS]
    room = SMS_MAX_CHARS - len(SMS_REPLY_HINT) - 1
    return f"{message.text[:room]}\n{SMS_REPLY_HINT}"


class SmsChannel:
    """Form-POSTs the message text to a Twilio-compatible gateway (Messages.json)."""

    name = "sms"

    def __init__(self, settings: Settings, poster: HttpPoster) -> None:
        self._settings = settings
        self._poster = poster
        credentials = f"{settings.sms_account_sid}:{settings.sms_auth_token.get_secret_value()}"
        self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()

    async def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
        settings = self._settings
        if not settings.sms_base_url:
            msg = "no SMS gateway is configured (ERN_SMS_BASE_URL is unset)"
            raise PermanentDeliveryError(msg)
        phone = contact.get("phone")
        if not phone:
            msg = "the member has no phone number any more"
            raise PermanentDeliveryError(msg)
        sid = settings.sms_account_sid
        url = f"{settings.sms_base_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        form = {"To": str(phone), "From": settings.sms_from, "Body": sms_text(message)}
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
            "Authorization": self._authorization,
            DELIVERY_HEADER: message.delivery_id,
        }
        body = urlencode(form).encode()
        answer = await self._poster.post(url, what="SMS gateway", headers=headers, body=body)
        check_http_response(answer, what="SMS gateway", now=now)


def message_id(delivery_id: str, *, sender: str) -> str:
    """A Message-ID that is the same on every attempt of a delivery, so MTAs and clients dedupe."""
    domain = sender.rpartition("@")[2] or "ern.invalid"
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:32]
    return f"<ern.{digest}@{domain}>"


class EmailChannel:
    """Sends the message text by SMTP to the member's e-mail address."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tls: ssl.SSLContext | None = None
        # Connections that sent a message and wait for the next one of the batch.
        self._idle: list[smtplib.SMTP] = []
        self._idle_lock = threading.Lock()

    def _connect(self) -> smtplib.SMTP:
        """A connection, secured and logged in as ERN_SMTP_SECURITY/USERNAME say."""
        settings = self._settings
        if settings.smtp_security != "none" and self._tls is None:
            cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            self._tls = ssl.create_default_context(cafile=cafile)
        timeout = settings.delivery_timeout_s
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=timeout, context=self._tls
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        try:
            if settings.smtp_security == "starttls":
                # Refuses (SMTPNotSupportedError) a server that does not offer STARTTLS: the
                # message and the credentials never go in clear when TLS was asked for.
                smtp.starttls(context=self._tls)
            if settings.smtp_username is not None:
                password = (
                    settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                )
                smtp.login(settings.smtp_username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def build(self, message: Message, address: str, *, now: datetime) -> EmailMessage:
        """The e-mail for one attempt (same Message-ID on every attempt)."""
        settings = self._settings
        mail = EmailMessage(policy=_MAIL_POLICY)
        mail["From"] = settings.smtp_from
        mail["To"] = address
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(now)
        mail["Message-ID"] = message_id(message.delivery_id, sender=settings.smtp_from)
        mail[DELIVERY_HEADER] = message.delivery_id
        mail.set_content(message.text)
        return mail

    async def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
        # smtplib blocks: in a thread of the loop's executor.
        deliver = functools.partial(self.deliver, message, contact, now=now)
        await asyncio.get_running_loop().run_in_executor(None, deliver)

    def deliver(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
        """Send one e-mail (over a connection of this batch); raises a DeliveryError on failure."""
        address = contact.get("email")
        if not address:
            msg = "the member has no e-mail address any more"
            raise PermanentDeliveryError(msg)
        mail = self.build(message, str(address), now=now)
        try:
            self._send(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            msg = f"SMTP server refused the recipient (codes {codes})"
            if codes and all(code >= 500 for code in codes):
                raise PermanentDeliveryError(msg) from exc
            raise TransientDeliveryError(msg) from exc
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            msg = scrub(f"SMTP {exc.smtp_code}: {text}", str(address))
            if exc.smtp_code >= 500:
                raise PermanentDeliveryError(msg) from exc
            raise TransientDeliveryError(msg) from exc
        except (smtplib.SMTPException, OSError) as exc:
            msg = f"SMTP server unreachable ({type(exc).__name__})"
            raise TransientDeliveryError(msg) from exc

    def _send(self, mail: EmailMessage) -> None:
        # A connection the batch already opened, if one is free: connecting, STARTTLS and the
        # login are several round trips each, and an alert's e-mails leave in one batch.
        with self._idle_lock:
            smtp = self._idle.pop() if self._idle else None
        if smtp is not None:
            try:
                smtp.send_message(mail)
            except smtplib.SMTPServerDisconnected:
                smtp.close()  # dropped while idle: send once more on a new connection
            except BaseException:
                _quit(smtp)
                raise
            else:
                self._keep(smtp)
                return
        smtp = self._connect()
        try:
            smtp.send_message(mail)
        except BaseException:
            _quit(smtp)
            raise
        self._keep(smtp)

    def _keep(self, smtp: smtplib.SMTP) -> None:
        with self._idle_lock:
            self._idle.append(smtp)

    async def end_batch(self) -> None:
        """QUIT the connections this batch opened (at once, in the loop's executor threads)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        if idle:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(None, _quit, smtp) for smtp in idle))


def _quit(smtp: smtplib.SMTP) -> None:
    """QUIT and close, whatever the server says (the message is sent or failed already)."""
    try:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
    finally:
        smtp.close()


def http_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Webhook and SMS-gateway TLS trust: certifi's CAs plus ERN_HTTP_CA_FILE's; None if unset.

    A ValueError naming ERN_HTTP_CA_FILE if the file is unusable.
    """
    if settings.http_ca_file is None:
        return None  # HttpPoster's default: certifi's CAs alone
    # In addition to certifi's: members' webhooks on public CAs keep working.
    context = httpx.create_ssl_context(trust_env=False)
    trust_ca_file(context, settings.http_ca_file)
    return context


def make_channels(settings: Settings, poster: HttpPoster) -> dict[str, Channel]:
    """Every channel by name, the HTTP ones sharing one poster."""
    channels: list[Channel] = [
        WebhookChannel(settings, poster),
        EmailChannel(settings),
        SmsChannel(settings, poster),
    ]
    return {channel.name: channel for channel in channels}
