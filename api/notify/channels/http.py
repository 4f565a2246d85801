"""The HTTP poster the webhook and SMS channels share: kept-alive HTTP/1.1 on asyncio."""

from __future__ import annotations

import asyncio
import functools
import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from api.notify.errors import PermanentDeliveryError, TransientDeliveryError
from api.settings import HTTP_CONNECTIONS_PER_HOST, Settings, trust_ca_file


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
