"""Delivery channels: HMAC-signed webhook, SMTP e-mail and a Twilio-compatible SMS gateway."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import select
import smtplib
import socket
import ssl
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
from api.settings import Settings

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
    """Sends one message to one destination; raises a DeliveryError on failure."""

    name: str

    def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None: ...


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
# A kept-alive connection the server may already have closed: the request never reached it.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HttpPoster:
    """POSTs over kept-alive connections, one request at a time: one poster per sender thread.

    The standard library's http.client, one idle connection kept per origin (up to
    ``max_origins``, for ``idle_s``): httpx cost three times the CPU per request, its shared
    pool's lock was contended by the sender threads, and its Client logged every request,
    the member's URL included, at INFO. No proxies from the environment, no redirects.
    """

    def __init__(self, *, timeout_s: float, max_origins: int = 8, idle_s: float = 4.0) -> None:
        self._timeout_s = timeout_s
        self._max_origins = max_origins
        self._idle_s = idle_s
        self._idle: OrderedDict[Origin, tuple[http.client.HTTPConnection, float]] = OrderedDict()
        self._tls: ssl.SSLContext | None = None

    def post(
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
        DNS answer cannot redirect it.
        """
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            port = parts.port
            host = parts.hostname
        except ValueError as exc:
            msg = f"{what} URL is not usable (InvalidURL)"
            raise PermanentDeliveryError(msg) from exc
        if scheme not in ("http", "https") or not host:
            msg = f"{what} URL is not usable (UnsupportedProtocol)"
            raise PermanentDeliveryError(msg)
        origin = (scheme, host, port or (443 if scheme == "https" else 80), public_only)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn = self._take(origin)
            if conn is not None:
                try:
                    return self._exchange(origin, conn, target, headers, body)
                except _STALE:
                    conn.close()  # closed while idle: send once more on a new connection
            return self._exchange(origin, self._connect(origin, what=what), target, headers, body)
        except TimeoutError as exc:
            msg = f"{what} timed out ({type(exc).__name__})"
            raise TransientDeliveryError(msg) from exc
        except http.client.InvalidURL as exc:  # e.g. control characters in the path
            msg = f"{what} URL is not usable ({type(exc).__name__})"
            raise PermanentDeliveryError(msg) from exc
        # Before ValueError: a refused certificate is both, and the receiver may fix it.
        except (OSError, http.client.HTTPException) as exc:
            msg = f"{what} unreachable ({type(exc).__name__})"
            raise TransientDeliveryError(msg) from exc
        except ValueError as exc:  # e.g. a host name IDNA cannot encode
            msg = f"{what} URL is not usable ({type(exc).__name__})"
            raise PermanentDeliveryError(msg) from exc

    def _exchange(
        self,
        origin: Origin,
        conn: http.client.HTTPConnection,
        target: str,
        headers: dict[str, str],
        body: bytes,
    ) -> HttpAnswer:
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._keep(origin, conn)
        return HttpAnswer(response.status, response.getheader("Retry-After"))

    def _connect(self, origin: Origin, *, what: str) -> http.client.HTTPConnection:
        scheme, host, port, public_only = origin
        conn: http.client.HTTPConnection
        if scheme == "http":
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout_s)
        else:
            if self._tls is None:
                # httpx's context (certifi's CAs, verification on, no SSL_CERT_* from the
                # environment): the same trust as the httpx client this replaced.
                self._tls = httpx.create_ssl_context(trust_env=False)
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._timeout_s, context=self._tls
            )
        if public_only:
            address = public_address(host, port, what=what)
            # http.client opens its socket through this attribute; TLS still verifies `host`.
            conn._create_connection = functools.partial(  # type: ignore[attr-defined]
                _connect_to, address
            )
        return conn

    def _take(self, origin: Origin) -> http.client.HTTPConnection | None:
        kept = self._idle.pop(origin, None)
        if kept is None:
            return None
        conn, since = kept
        if time.monotonic() - since > self._idle_s or _closed_by_peer(conn):
            conn.close()
            return None
        return conn

    def _keep(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        now = time.monotonic()
        # Least recently used first: close what idled out or is one origin too many.
        while self._idle:
            oldest, (idle_conn, since) = next(iter(self._idle.items()))
            if len(self._idle) < self._max_origins and now - since <= self._idle_s:
                break
            del self._idle[oldest]
            idle_conn.close()
        self._idle[origin] = (conn, now)

    def close(self) -> None:
        """Close the kept-alive connections."""
        while self._idle:
            _, (conn, _) = self._idle.popitem()
            conn.close()


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


def _connect_to(
    address: tuple[str, int],
    _requested: tuple[str, int],
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    return socket.create_connection(address, timeout, source_address)


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    # An idle connection is readable only if the server closed it (or sent what it should not).
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


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
        # Members choose webhook URLs; the operator chooses the SMS gateway's (trusted).
        self._public_only = not settings.webhook_allow_private

    def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
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
            SIGNATURE_HEADER: sign(_member_key(self._secret, message.member_id), body),
            DELIVERY_HEADER: message.delivery_id,
        }
        answer = self._poster.post(
            str(url), what="webhook", headers=headers, body=body, public_only=self._public_only
        )
        check_http_response(answer, what="webhook", now=now)


class SmsChannel:
    """Form-POSTs the message text to a Twilio-compatible gateway (Messages.json)."""

    name = "sms"

    def __init__(self, settings: Settings, poster: HttpPoster) -> None:
        self._settings = settings
        self._poster = poster
        credentials = f"{settings.sms_account_sid}:{settings.sms_auth_token.get_secret_value()}"
        self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()

    def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
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
        form = {"To": str(phone), "From": settings.sms_from, "Body": message.text[:SMS_MAX_CHARS]}
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
            "Authorization": self._authorization,
            DELIVERY_HEADER: message.delivery_id,
        }
        body = urlencode(form).encode()
        answer = self._poster.post(url, what="SMS gateway", headers=headers, body=body)
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

    def send(self, message: Message, contact: dict[str, Any], *, now: datetime) -> None:
        address = contact.get("email")
        if not address:
            msg = "the member has no e-mail address any more"
            raise PermanentDeliveryError(msg)
        mail = self.build(message, str(address), now=now)
        try:
            with self._connect() as smtp:
                smtp.send_message(mail)
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


def make_channels(settings: Settings, poster: HttpPoster) -> dict[str, Channel]:
    """Every channel by name, the HTTP ones sharing one poster."""
    channels: list[Channel] = [
        WebhookChannel(settings, poster),
        EmailChannel(settings),
        SmsChannel(settings, poster),
    ]
    return {channel.name: channel for channel in channels}
