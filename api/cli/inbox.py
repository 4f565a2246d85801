"""`ern inbox`: a local webhook receiver that checks X-Ern-Signature and prints each message."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Annotated, Any

import typer

from api.notify.channels import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    verify_signature,
    webhook_signing_key,
)

if TYPE_CHECKING:
    from api.settings import Settings

MAX_BODY_BYTES = 1_000_000


class Verifier:
    """Checks a signature with one member's key (--key) or each member's key from the secret."""

    def __init__(self, *, key: bytes | None, settings: Settings | None) -> None:
        self._key = key
        self._settings = settings
        self._keys: dict[uuid.UUID, bytes] = {}

    def check(self, body: bytes, signature: str | None, delivery_id: str) -> bool:
        """Whether the signature is the recipient's (named in the delivery id) over the body."""
        if self._key is not None:
            return verify_signature(self._key, body, signature)
        assert self._settings is not None
        try:
            member_id = uuid.UUID(delivery_id.split(":")[1])
        except (IndexError, ValueError):
            return False
        if member_id not in self._keys:
            self._keys[member_id] = webhook_signing_key(self._settings, member_id)
        return verify_signature(self._keys[member_id], body, signature)


def _describe(document: dict[str, Any]) -> str:
    data = document.get("data") if isinstance(document.get("data"), dict) else {}
    assert isinstance(data, dict)
    text = str(data.get("text") or data.get("subject") or "").replace("\n", " | ")
    return f"{document.get('kind')} for alert {document.get('alert_id')}: {text}".rstrip(": ")


def make_server(host: str, port: int, verifier: Verifier) -> ThreadingHTTPServer:
    """The receiver: 200 for a verified message, 401 for a bad signature, 400 for no JSON."""
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, "too large")
                return
            body = self.rfile.read(length)
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            try:
                document = json.loads(body)
                delivery_id = str(document["delivery_id"])
            except (ValueError, KeyError, TypeError):
                typer.echo(f"{stamp} not an ern message ({length} bytes): answered 400")
                self._answer(400, "not an ern message")
                return
            if self.headers.get(DELIVERY_HEADER) != delivery_id or not verifier.check(
                body, self.headers.get(SIGNATURE_HEADER), delivery_id
            ):
                typer.echo(f"{stamp} BAD SIGNATURE on {delivery_id}: answered 401, not shown")
                self._answer(401, "bad signature")
                return
            with lock:
                duplicate = delivery_id in seen
                seen.add(delivery_id)
            note = " (duplicate, ignored)" if duplicate else ""
            typer.echo(f"{stamp} signature ok{note} {_describe(document)}")
            typer.echo(f"    delivery {delivery_id}")
            self._answer(200, "ok")

        def _answer(self, status: int, text: str) -> None:
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return ThreadingHTTPServer((host, port), Handler)


def inbox(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8025,
    key: Annotated[
        str | None,
        typer.Option(
            help="one member's key (hex, GET /v1/members/me/webhook-key); default: every "
            "member's, derived from this machine's ERN_SECRET_KEY or ./var/secret_key"
        ),
    ] = None,
) -> None:
    """Receive signed webhooks locally and print each message (check: X-Ern-Signature)."""
    from api.settings import InsecureSettings, Settings

    settings = None
    if key is None:
        settings = Settings()
        try:
            settings.secret_bytes()
        except InsecureSettings as exc:
            raise typer.BadParameter(f"{exc}; or give --key", param_hint="--key") from None
    try:
        verifier = Verifier(key=bytes.fromhex(key) if key else None, settings=settings)
    except ValueError:
        raise typer.BadParameter("not a hex key", param_hint="--key") from None
    try:
        server = make_server(host, port, verifier)
    except OSError as exc:
        typer.echo(f"ern inbox: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    url = f"http://{host}:{server.server_address[1]}/"
    typer.echo(f"ern inbox: listening on {url} (give members this webhook_url)")
    typer.echo(
        "ern inbox: the service delivers to this address only when started with "
        "ERN_WEBHOOK_ALLOW_PRIVATE=true; Ctrl-C stops the inbox"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
