"""ERN_HTTP_CA_FILE: webhooks and the SMS gateway over HTTPS on an internal CA, by the worker."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from api.notify.channels import http_tls_context, verify_signature, webhook_signing_key
from api.notify.service import delivery_id
from api.notify.worker import OutboxWorker
from api.settings import Settings
from tests.conftest import REPO, TEST_SECRET
from tests.notify.conftest import (
    SMS_SID,
    HttpReceiver,
    _twilio,
    deliveries,
    serve,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def internal_ca(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """An internal CA (its PEM file) and a server context for 127.0.0.1 with a leaf it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ern test internal CA"))
        .issuer_name(_name("ern test internal CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, chain, key_file = tmp_path / "ca.pem", tmp_path / "chain.pem", tmp_path / "key.pem"
    ca_file.write_bytes(_pem(ca))
    chain.write_bytes(_pem(leaf))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain, key_file)
    return ca_file, server


@pytest.fixture
def https_webhook(internal_ca: tuple[Path, ssl.SSLContext]) -> Iterator[HttpReceiver]:
    """An HTTPS webhook receiver on 127.0.0.1 whose certificate the internal CA signed."""
    yield from serve(HttpReceiver(default=lambda _: (200, {}, b'{"ok": true}')), tls=internal_ca[1])


@pytest.fixture
def https_sms_gateway(internal_ca: tuple[Path, ssl.SSLContext]) -> Iterator[HttpReceiver]:
    """The Twilio-compatible gateway of conftest, over HTTPS with the internal CA's certificate."""
    yield from serve(HttpReceiver(default=_twilio), tls=internal_ca[1])


def _https_settings(base: Settings, gateway: HttpReceiver, ca_file: Path | None) -> Settings:
    # Validated as at start-up (model_copy would skip ERN_HTTP_CA_FILE's check).
    return Settings.model_validate(
        {**base.model_dump(), "sms_base_url": gateway.url, "http_ca_file": ca_file}
    )


class TestInternalCa:
    def test_webhook_and_sms_are_sent_when_the_ca_file_is_trusted(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        committed: sessionmaker[Session],
        notify_settings: Settings,
        internal_ca: tuple[Path, ssl.SSLContext],
        https_webhook: HttpReceiver,
        https_sms_gateway: HttpReceiver,
    ) -> None:
        assert https_webhook.url.startswith("https://")
        assert https_sms_gateway.url.startswith("https://")
        settings = _https_settings(notify_settings, https_sms_gateway, internal_ca[0])
        member = make_member(webhook_url=f"{https_webhook.url}/hooks/ern", phone="+358401234567")
        alert_id = enqueue_committed(member)
        assert make_worker(settings).run_once() == 2

        rows = deliveries(committed, alert_id)
        assert {(r.channel, r.state, r.attempts, r.last_error) for r in rows} == {
            ("webhook", "sent", 1, None),
            ("sms", "sent", 1, None),
        }
        [request] = https_webhook.requests
        assert request.path == "/hooks/ern"
        assert request.headers["x-ern-delivery"] == delivery_id(
            alert_id, member.id, "webhook", "alert"
        )
        key = webhook_signing_key(settings, member.id)
        assert verify_signature(key, request.body, request.headers["x-ern-signature"])
        assert request.json()["alert_id"] == str(alert_id)
        [sms] = https_sms_gateway.requests
        assert sms.path == f"/2010-04-01/Accounts/{SMS_SID}/Messages.json"
        assert sms.form()["To"] == "+358401234567"

    def test_without_the_ca_file_nothing_is_sent_and_the_rows_are_retried(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        committed: sessionmaker[Session],
        notify_settings: Settings,
        https_webhook: HttpReceiver,
        https_sms_gateway: HttpReceiver,
    ) -> None:
        settings = _https_settings(notify_settings, https_sms_gateway, None)
        member = make_member(webhook_url=f"{https_webhook.url}/hooks/ern", phone="+358401234567")
        alert_id = enqueue_committed(member)
        assert make_worker(settings).run_once() == 2

        rows = deliveries(committed, alert_id)
        assert {(r.channel, r.state, r.attempts) for r in rows} == {
            ("webhook", "pending", 1),
            ("sms", "pending", 1),
        }
        assert {r.last_error for r in rows} == {
            "webhook unreachable (SSLCertVerificationError)",
            "SMS gateway unreachable (SSLCertVerificationError)",
        }
        assert https_webhook.requests == []
        assert https_sms_gateway.requests == []

    def test_the_ca_file_is_trusted_in_addition_to_certifi(
        self, settings: Settings, internal_ca: tuple[Path, ssl.SSLContext]
    ) -> None:
        with_ca = Settings.model_validate({**settings.model_dump(), "http_ca_file": internal_ca[0]})
        context = http_tls_context(with_ca)
        assert context is not None
        certifi = httpx.create_ssl_context(trust_env=False).get_ca_certs()
        trusted = context.get_ca_certs()
        assert len(certifi) > 100
        assert all(cert in trusted for cert in certifi)
        assert len(trusted) == len(certifi) + 1
        # Verification and the host name check stay on.
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert http_tls_context(settings) is None  # unset: HttpPoster's certifi default


class TestRefusedAtStart:
    @pytest.mark.parametrize("content", [None, b"", b"not a certificate\n"])
    @pytest.mark.parametrize("field", ["http_ca_file", "smtp_ca_file"])
    def test_a_missing_or_unusable_file_is_refused_by_name(
        self, settings: Settings, tmp_path: Path, content: bytes | None, field: str
    ) -> None:
        # ERN_SMTP_CA_FILE alike: before, a bad one failed every e-mail instead of the start.
        path = tmp_path / "ca.pem"
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ValidationError, match=f"ERN_{field.upper()}=") as refused:
            Settings.model_validate({**settings.model_dump(), field: path})
        assert str(path) in str(refused.value)

    def test_a_directory_is_refused_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("ERN_HTTP_CA_FILE", str(tmp_path))
        with pytest.raises(ValidationError, match=r"ERN_HTTP_CA_FILE=.*Is a directory"):
            Settings()

    def test_a_worker_refuses_settings_that_skipped_validation(
        self,
        committed: sessionmaker[Session],
        notify_settings: Settings,
        tmp_path: Path,
    ) -> None:
        missing = notify_settings.model_copy(update={"http_ca_file": tmp_path / "missing.pem"})
        with pytest.raises(ValueError, match=r"ERN_HTTP_CA_FILE=.*No such file"):
            OutboxWorker(committed, missing, listen=False)

    def test_ern_worker_exits_naming_the_setting(self, tmp_path: Path, database_url: str) -> None:
        env = {
            **os.environ,
            "ERN_DATABASE_URL": database_url,
            "ERN_SECRET_KEY": TEST_SECRET,
            "ERN_HTTP_CA_FILE": str(tmp_path / "missing.pem"),
            "COLUMNS": "400",  # the traceback on one line per message, unwrapped
        }
        done = subprocess.run(
            [sys.executable, "-c", "from api.cli import app; app()", "worker"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = " ".join((done.stdout + done.stderr).split())
        assert done.returncode != 0
        assert f"ERN_HTTP_CA_FILE='{tmp_path / 'missing.pem'}' is not a readable" in output
        assert "No such file or directory" in output
