"""E-mail over STARTTLS or SMTPS with a login, against a real aiosmtpd server with TLS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr, ValidationError

from api.settings import Settings
from tests.notify.conftest import SmtpInbox, deliveries, free_port, self_signed_certificate

USER, PASSWORD = "ern-mailer", "correct horse battery staple"


class Logins:
    """aiosmtpd authenticator: accepts USER/PASSWORD and records every attempt."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any):  # type: ignore[no-untyped-def]
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        self.seen.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
        # handled=False: aiosmtpd answers 535 itself on a failure.
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def logins() -> Logins:
    return Logins()


def _serve(**options: Any) -> Iterator[SmtpInbox]:
    inbox = SmtpInbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port, **options)
    controller.start()
    yield inbox
    controller.stop()


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path], logins: Logins) -> Iterator[SmtpInbox]:
    """Offers STARTTLS, requires it, and takes logins only over TLS."""
    yield from _serve(
        tls_context=_server_context(certificate),
        require_starttls=True,
        authenticator=logins,
        auth_require_tls=True,
        auth_required=True,
    )


@pytest.fixture
def smtps_server(certificate: tuple[Path, Path], logins: Logins) -> Iterator[SmtpInbox]:
    """SMTP inside TLS from the first byte (port 465 style)."""
    yield from _serve(
        ssl_context=_server_context(certificate),
        authenticator=logins,
        # aiosmtpd only counts STARTTLS as TLS; here the whole connection is inside TLS.
        auth_require_tls=False,
    )


def _mail_settings(base: Settings, port: int, **changes: Any) -> Settings:
    return base.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port, **changes})


def _send_one(make_member, enqueue_committed, make_worker, settings: Settings) -> Any:  # type: ignore[no-untyped-def]
    member = make_member(email="responder@example.org")
    alert_id = enqueue_committed(member)
    assert make_worker(settings).run_once() == 1
    return alert_id


def test_starttls_and_login(
    make_member, enqueue_committed, make_worker, notify_settings, committed, certificate,
    starttls_server, logins,
) -> None:  # fmt: skip
    settings = _mail_settings(
        notify_settings, starttls_server.port, smtp_security="starttls",
        smtp_ca_file=certificate[0], smtp_username=USER, smtp_password=SecretStr(PASSWORD),
    )  # fmt: skip
    alert_id = _send_one(make_member, enqueue_committed, make_worker, settings)
    assert [row.state for row in deliveries(committed, alert_id)] == ["sent"]
    assert len(starttls_server.messages) == 1
    assert logins.seen == [(USER, True)]


def test_smtps_and_login(
    make_member, enqueue_committed, make_worker, notify_settings, committed, certificate,
    smtps_server, logins,
) -> None:  # fmt: skip
    settings = _mail_settings(
        notify_settings, smtps_server.port, smtp_security="tls",
        smtp_ca_file=certificate[0], smtp_username=USER, smtp_password=SecretStr(PASSWORD),
    )  # fmt: skip
    alert_id = _send_one(make_member, enqueue_committed, make_worker, settings)
    assert [row.state for row in deliveries(committed, alert_id)] == ["sent"]
    assert len(smtps_server.messages) == 1


def test_a_wrong_password_is_a_failed_delivery_and_sends_nothing(
    make_member, enqueue_committed, make_worker, notify_settings, committed, certificate,
    starttls_server, logins,
) -> None:  # fmt: skip
    settings = _mail_settings(
        notify_settings, starttls_server.port, smtp_security="starttls",
        smtp_ca_file=certificate[0], smtp_username=USER, smtp_password=SecretStr("wrong"),
    )  # fmt: skip
    alert_id = _send_one(make_member, enqueue_committed, make_worker, settings)
    (row,) = deliveries(committed, alert_id)
    assert row.state == "failed" and "535" in (row.last_error or "")
    assert "wrong" not in (row.last_error or "")
    assert starttls_server.messages == []
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN).
    assert logins.seen and all(seen == (USER, False) for seen in logins.seen)


def test_an_untrusted_certificate_is_retried_not_sent_in_clear(
    make_member, enqueue_committed, make_worker, notify_settings, committed, starttls_server,
    logins,
) -> None:  # fmt: skip
    settings = _mail_settings(
        notify_settings, starttls_server.port, smtp_security="starttls",
        smtp_username=USER, smtp_password=SecretStr(PASSWORD),
    )  # fmt: skip
    alert_id = _send_one(make_member, enqueue_committed, make_worker, settings)
    (row,) = deliveries(committed, alert_id)
    assert row.state == "pending" and row.attempts == 1
    assert "SSLCertVerificationError" in (row.last_error or "")
    assert starttls_server.messages == [] and logins.seen == []


def test_starttls_asked_of_a_server_without_it_sends_nothing(
    make_member, enqueue_committed, make_worker, notify_settings, committed, smtp_server,
) -> None:  # fmt: skip
    settings = _mail_settings(notify_settings, smtp_server.port, smtp_security="starttls")
    alert_id = _send_one(make_member, enqueue_committed, make_worker, settings)
    (row,) = deliveries(committed, alert_id)
    assert row.state == "pending" and row.attempts == 1
    assert smtp_server.messages == []


def test_a_login_without_tls_is_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="ERN_SMTP_SECURITY"):
        Settings.model_validate({**settings.model_dump(), "smtp_username": USER})
