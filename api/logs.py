"""Log lines: request ids (X-Request-ID), ERN_LOG_FORMAT=json, redaction of secrets and places."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_HEADER = "X-Request-ID"
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_log = logging.getLogger("ern.access")

# A client's id is kept if it is short and plain (it ends up in log lines); else one is made.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# What must never be in a log line: bearer tokens (and any long URL-safe secret), e-mail
# addresses, E.164 phone numbers, and decimal degrees precise enough to place someone
# (3+ decimals: ~100 m or better). Times ("12:00:05.123") have no 3-decimal part like this.
_REDACTIONS = (
    (re.compile(r"(?i)(bearer\s+)\S+"), r"\1[token]"),
    (re.compile(r"[A-Za-z0-9_\-]{40,}"), "[secret]"),
    (re.compile(r"[^@\s\"'<>]+@[^@\s\"'<>]+\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"\+[1-9]\d{6,14}"), "[phone]"),
    (re.compile(r"(?<![\d.])-?\d{1,3}\.\d{3,}"), "[coord]"),
)


def redact(text: str) -> str:
    """The text without tokens, contact details or precise coordinates."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """The text format, redacted, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        rid = getattr(record, "request_id", None) or request_id.get()
        return f"{line} [request_id={rid}]" if rid else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for key in ("method", "route", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, separators=(",", ":"))


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ERN_LOG_FORMAT."""
    return JsonFormatter() if log_format == "json" else RedactingFormatter(TEXT_FORMAT)


def configure(log_format: str, *, level: int = logging.INFO) -> None:
    """Root logging to stderr in ERN_LOG_FORMAT (replacing basicConfig), uvicorn's loggers too."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Alembic says which dialect it uses each time /healthz compares the schema's revision.
    logging.getLogger("alembic").setLevel(logging.WARNING)


class RequestId:
    """Takes X-Request-ID (or makes one), holds it for log lines, and echoes it on every answer.

    With ``log_requests`` it also logs one access line per request (route template, status,
    duration; never the raw path or query), which the JSON format uses instead of uvicorn's.
    """

    def __init__(self, app: ASGIApp, *, log_requests: bool = False) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def echo(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, echo)
        finally:
            if self.log_requests:
                route = scope.get("route")
                template = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
                duration_ms = round((time.perf_counter() - started) * 1000, 1)
                access_log.info(
                    "%s %s %d %.1f ms",
                    scope["method"],
                    template or "<unmatched>",
                    status,
                    duration_ms,
                    extra={
                        "method": scope["method"],
                        "route": template or "<unmatched>",
                        "status": status,
                        "duration_ms": duration_ms,
                    },
                )
            request_id.reset(token)
