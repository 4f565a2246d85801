"""E-mail channel: the message text by SMTP, connections shared within a batch."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import smtplib
import ssl
import threading
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from api.notify.channels.message import DELIVERY_HEADER, Message, scrub
from api.notify.errors import PermanentDeliveryError, TransientDeliveryError
from api.settings import Settings

# Delivery ids are ~90 characters without spaces: allow them on one header line, unencoded.
_MAIL_POLICY = policy.default.clone(max_line_length=998)


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
