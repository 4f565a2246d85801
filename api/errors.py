"""Domain errors -> one JSON body {"error", "detail"}; one table maps classes to status codes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api.database import database_away
from geo import errors as geo_errors

log = logging.getLogger("ern")


class ErrorBody(BaseModel):
    """Every error answer: the error class name and a human-readable reason."""

    error: str
    detail: str


class ErnError(Exception):
    """Base of the service's domain errors; subclasses set ``status_code``."""

    status_code = 400
    headers: Mapping[str, str] | None = None


class NotFound(ErnError):
    status_code = 404


class Unauthorized(ErnError):
    status_code = 401
    headers: Mapping[str, str] | None = MappingProxyType({"WWW-Authenticate": "Bearer"})


class Forbidden(ErnError):
    status_code = 403


class Conflict(ErnError):
    status_code = 409


class Unprocessable(ErnError):
    status_code = 422


class PayloadTooLarge(ErnError):
    status_code = 413


class ServiceUnavailable(ErnError):
    status_code = 503


# Engine errors keep their own classes (and names in the body); this table gives their status.
GEO_STATUS: dict[type[geo_errors.GeoError], int] = {
    geo_errors.OutsideServiceArea: 422,
    geo_errors.InvalidGeometry: 422,
    geo_errors.GraphUnavailable: 503,
    geo_errors.GraphCacheMismatch: 503,
    geo_errors.SourceUnavailable: 422,
}

DATABASE_RETRY_AFTER_S = 2


def database_away_response() -> JSONResponse:
    """503 with Retry-After: the request changed nothing (its transaction was rolled back)."""
    return error_response(
        503,
        "DatabaseUnavailable",
        "the database is unreachable; nothing was changed, retry later (see /healthz)",
        {"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


HTTP_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "TooManyRequests",
}

# What every route documents besides its own responses.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, bad or revoked token"},
    422: {"model": ErrorBody, "description": "invalid input; nothing was changed"},
}


def error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one error body."""
    return JSONResponse(
        status_code=status, content={"error": error, "detail": detail}, headers=headers
    )


def _location(loc: tuple[Any, ...]) -> str:
    # Only the leading source is dropped: "path" is also a field name (a route's path).
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:]
    return ".".join(str(p) for p in loc) or "body"


def describe_validation(errors: list[Any]) -> str:
    """``field.path: reason`` for each pydantic error, joined by '; '."""
    lines = []
    for err in errors:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{_location(tuple(err.get('loc', ())))}: {msg}")
    return "; ".join(lines) or "invalid request"


def allowed_methods(request: Request) -> str | None:
    """The methods the OpenAPI schema lists for the request's path (a 405's Allow header)."""
    matches = [
        (template.count("{"), operations)
        for template, operations in request.app.openapi()["paths"].items()
        if compile_path(template)[0].match(request.url.path)
    ]
    # /v1/members/me also fits /v1/members/{member_id}: the most literal template is the resource.
    fewest = min((params for params, _ in matches), default=0)
    methods = {m.upper() for params, ops in matches if params == fewest for m in ops}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) or None


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as ErrorBody; unexpected errors are logged and answered 500."""

    @app.exception_handler(ErnError)
    async def _ern(_: Request, exc: ErnError) -> JSONResponse:
        return error_response(exc.status_code, type(exc).__name__, str(exc), exc.headers)

    @app.exception_handler(geo_errors.GeoError)
    async def _geo(_: Request, exc: geo_errors.GeoError) -> JSONResponse:
        status = next((s for cls, s in GEO_STATUS.items() if isinstance(exc, cls)), 422)
        return error_response(status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        return error_response(422, "ValidationError", describe_validation(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's bare 400 for a body that is not text; malformed JSON text is a 422.
            detail = f"body: not valid JSON text ({exc.__cause__.reason})"
            return error_response(422, "ValidationError", detail)
        name = HTTP_NAMES.get(exc.status_code, "HTTPError")
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette lists the methods of the first route of the path only (one route per
            # method here); RFC 9110 asks for all of them.
            allow = allowed_methods(request)
            if allow:
                headers = {**(headers or {}), "Allow": allow}
        return error_response(exc.status_code, name, str(exc.detail), headers)

    @app.exception_handler(sa_exc.DBAPIError)
    @app.exception_handler(sa_exc.TimeoutError)
    @app.exception_handler(psycopg.Error)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        if database_away(exc):
            log.warning("database unavailable: %s", type(exc.__cause__ or exc).__name__)
            return database_away_response()
        log.exception("unhandled database error", exc_info=exc)
        return error_response(500, "InternalError", "unexpected error; it has been logged")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "InternalError", "unexpected error; it has been logged")
