"""`ern inbox`: messages signed with the recipient's key are shown, anything else refused."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from api.cli.inbox import Verifier, make_server
from api.notify.channels import Message, sign, webhook_body, webhook_signing_key
from api.settings import Settings


@pytest.fixture
def inbox(settings: Settings, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, Verifier(key=None, settings=settings))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _message(member_id: uuid.UUID) -> tuple[str, bytes]:
    alert_id = uuid.uuid4()
    delivery_id = f"{alert_id}:{member_id}:webhook:alert"
    message = Message(
        delivery_id=delivery_id,
        alert_id=alert_id,
        member_id=member_id,
        kind="alert",
        payload={"text": "Help needed near you."},
        attempt=1,
    )
    return delivery_id, webhook_body(message, now=datetime.now(UTC))


def _post(url: str, delivery_id: str, body: bytes, signature: str) -> int:
    headers = {"X-Ern-Delivery": delivery_id, "X-Ern-Signature": signature}
    return httpx.post(url, content=body, headers=headers).status_code


class TestInbox:
    def test_a_message_signed_with_its_recipients_key_is_printed_once(
        self, inbox: str, settings: Settings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        member_id = uuid.uuid4()
        delivery_id, body = _message(member_id)
        signature = sign(webhook_signing_key(settings, member_id), body)
        assert _post(inbox, delivery_id, body, signature) == 200
        assert _post(inbox, delivery_id, body, signature) == 200
        out = capsys.readouterr().out
        assert "signature ok alert for alert" in out and "Help needed near you." in out
        assert out.count("(duplicate, ignored)") == 1

    def test_another_members_signature_is_refused_and_not_shown(
        self, inbox: str, settings: Settings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        delivery_id, body = _message(uuid.uuid4())
        forged = sign(webhook_signing_key(settings, uuid.uuid4()), body)
        assert _post(inbox, delivery_id, body, forged) == 401
        assert _post(inbox, delivery_id, body + b" ", sign(b"k" * 32, body)) == 401
        assert httpx.post(inbox, content=b"not json").status_code == 400
        out = capsys.readouterr().out
        assert "BAD SIGNATURE" in out and "Help needed" not in out
