"""Logs: X-Request-ID on every answer, ERN_LOG_FORMAT=json lines, nothing secret or precise."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.logs import JsonFormatter, RedactingFormatter, redact
from api.main import create_app
from api.members.models import Member
from api.settings import Settings
from tests.api.factories import auth

Caller = tuple[Member, str]


@pytest.fixture
def json_lines(settings: Settings, graphs: Any, engine: Any, session_factory: Any) -> Iterator[Any]:
    """(client with ERN_LOG_FORMAT=json, the captured log stream)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    json_settings = settings.model_copy(update={"log_format": "json"})
    app = create_app(json_settings, engine=engine, session_factory=session_factory, graphs=graphs)
    try:
        yield TestClient(app, raise_server_exceptions=False), stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


class TestRequestId:
    def test_a_given_id_is_echoed_and_one_is_made_otherwise(
        self, client: TestClient, responder: Caller
    ) -> None:
        r = client.get("/v1/members/me", headers={**auth(responder[1]), "X-Request-ID": "abc-1"})
        assert r.headers["X-Request-ID"] == "abc-1"
        made = client.get("/v1/members/me", headers=auth(responder[1])).headers["X-Request-ID"]
        assert len(made) == 32
        assert made != client.get("/healthz").headers["X-Request-ID"]

    @pytest.mark.parametrize(
        "url", ["/v1/members/me", "/no/such/path", "/healthz", f"/v1/alerts/{uuid.uuid4()}"]
    )
    def test_every_answer_carries_it_errors_too(self, client: TestClient, url: str) -> None:
        r = client.get(url, headers={"X-Request-ID": "rid-7"})
        assert r.headers["X-Request-ID"] == "rid-7"

    def test_a_too_large_body_answer_carries_it(self, client: TestClient) -> None:
        r = client.post("/v1/members", content=b"x" * 2_000_000, headers={"X-Request-ID": "big"})
        assert r.status_code == 413
        assert r.headers["X-Request-ID"] == "big"

    def test_an_unexpected_error_answer_carries_it(
        self, settings: Settings, graphs: Any, engine: Any, session_factory: Any
    ) -> None:
        # Starlette answers an unhandled error from its outermost middleware: the id must be
        # added outside it.
        app = create_app(settings, engine=engine, session_factory=session_factory, graphs=graphs)

        def fail() -> None:
            raise RuntimeError("unexpected")

        app.add_api_route("/boom", fail)
        r = TestClient(app, raise_server_exceptions=False).get(
            "/boom", headers={"X-Request-ID": "err-500"}
        )
        assert r.status_code == 500 and r.json()["error"] == "InternalError"
        assert r.headers["X-Request-ID"] == "err-500"

    def test_a_strange_id_is_replaced(self, client: TestClient) -> None:
        r = client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 200})
        assert r.headers["X-Request-ID"] != "a b\tc" + "x" * 200
        assert len(r.headers["X-Request-ID"]) == 32


class TestJsonLines:
    def test_one_object_a_line_with_the_request_id_and_route_template(
        self, json_lines: Any, responder: Caller, coordinator: Caller
    ) -> None:
        client, stream = json_lines
        member, token = responder
        headers = {**auth(coordinator[1]), "X-Request-ID": "json-1"}
        assert client.get(f"/v1/members/{member.id}", headers=headers).status_code == 200
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        access = [e for e in lines if e["logger"] == "ern.access"]
        assert access, stream.getvalue()
        entry = access[-1]
        assert entry["request_id"] == "json-1"
        assert entry["route"] == "/v1/members/{member_id}"
        assert entry["status"] == 200
        # The server's lines (httpx, the test's client, logs its own request URLs).
        server = "\n".join(json.dumps(e) for e in lines if e["logger"].startswith("ern"))
        assert str(member.id) not in server
        assert token not in server and coordinator[1] not in server

    def test_an_exception_is_one_line_too(self) -> None:
        try:
            raise ValueError("contact rosa@example.org at +4962210000000, 60.16987,24.93842")
        except ValueError:
            record = logging.LogRecord("ern", logging.ERROR, "x", 1, "boom", (), None)
            import sys

            record.exc_info = sys.exc_info()
        line = JsonFormatter().format(record)
        assert "\n" not in line
        entry = json.loads(line)
        assert "rosa@example.org" not in line and "+4962210000000" not in line
        assert "60.16987" not in line and "24.93842" not in line
        assert entry["exception"].startswith("Traceback")


class TestRedaction:
    @pytest.mark.parametrize(
        ("text", "gone"),
        [
            ("Authorization: Bearer abc.def", "abc.def"),
            ("token kP3x_ZC4vH8tuIp0HaJPmP-1K9h8E8yXzS0c3mBB0Yc issued", "kP3x_ZC4vH8t"),
            ("mail to rosa.luxemburg@example.org failed", "rosa.luxemburg@example.org"),
            ("sms to +4962210000000 failed", "+4962210000000"),
            ("at [24.938420, 60.169870]", "24.938420"),
            ("at POINT(24.9384 60.1698)", "60.1698"),
            ("lat=-33.8688", "-33.8688"),
        ],
    )
    def test_secrets_contacts_and_coordinates_are_redacted(self, text: str, gone: str) -> None:
        assert gone not in redact(text)

    def test_ordinary_lines_stay_readable(self) -> None:
        line = "delivery 3f2a: attempt 2 failed, retry in 4.0 s: HTTP 503"
        assert redact(line) == line

    def test_text_format_names_the_request_id(self) -> None:
        record = logging.LogRecord("ern", logging.INFO, "x", 1, "hello", (), None)
        record.request_id = "r-1"
        assert RedactingFormatter("%(message)s").format(record) == "hello [request_id=r-1]"
