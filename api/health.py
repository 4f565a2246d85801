"""GET /healthz: database, schema and graph status for operators and load balancers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from api.database import schema_status
from api.notify.models import CHANNELS
from api.notify.repository import oldest_due, recent_outcomes
from api.settings import Settings

router = APIRouter(tags=["health"])


class ChannelHealth(BaseModel):
    """How a channel's newest attempted deliveries went."""

    configured: bool = Field(description="false: the SMS channel without ERN_SMS_BASE_URL")
    status: str = Field(
        description="ok; degraded: none of the last ERN_HEALTH_DELIVERY_WINDOW attempted "
        "deliveries was sent; idle: none attempted yet; not configured"
    )
    recent: int = Field(description="attempted deliveries looked at (at most the window)")
    sent: int
    failed: int = Field(description="of those, failed for good or waiting for a retry")
    last_error: str | None = Field(description="the newest failure's reason")


class Health(BaseModel):
    """Overall status and its parts."""

    status: str
    database: str
    schema_revision: str | None
    schema_head: str | None
    schema_up_to_date: bool
    graphs: dict[str, str]
    service_area: dict[str, tuple[float, float, float, float]] = Field(
        description="per loaded mode, the bounding box of its street graph's nodes as "
        "[west, south, east, north] in degrees (GeoJSON bbox order); within it, a place "
        "farther than max_snap_m from every street node of the graph is still outside (422). "
        "Empty when no graph is loaded: every place is accepted and ranked by straight line"
    )
    max_snap_m: float = Field(description="ERN_MAX_SNAP_M: how far from the streets a place may be")
    outbox_lag_s: float | None = Field(
        description="how long the longest-waiting notification has been due without being "
        "sent (0: none waiting); it grows while no worker delivers, and the status stays ok "
        "(the API itself works); null when the database is not ready"
    )
    deliveries: dict[str, ChannelHealth] | None = Field(
        default=None,
        description="per channel, its newest attempted deliveries; a configured channel none "
        "of whose last ERN_HEALTH_DELIVERY_WINDOW was sent makes the status degraded (200: "
        "the API answers, a load balancer must keep it); null when the database is not ready",
    )


@router.get(
    "/healthz",
    response_model=Health,
    summary="Service health",
    responses={503: {"model": Health, "description": "database down or schema behind"}},
)
def healthz(request: Request) -> Any:
    """Database, schema, graphs and service area, outbox lag; 503 unless the database is up."""
    graphs = request.app.state.graphs.status()
    try:
        schema = schema_status(request.app.state.engine)
        database = "ok"
    except SQLAlchemyError as exc:
        schema = {"current": None, "head": None, "up_to_date": False}
        database = f"unreachable: {unreachable_reason(exc)}"
    ok = database == "ok" and bool(schema["up_to_date"])
    lag_s = _outbox_lag_s(request) if ok else None
    channels = _deliveries(request) if ok else None
    delivering = channels is None or all(c.status != "degraded" for c in channels.values())
    body = Health(
        status="ok" if ok and delivering else "degraded",
        database=database,
        schema_revision=schema["current"],  # type: ignore[arg-type]
        schema_head=schema["head"],  # type: ignore[arg-type]
        schema_up_to_date=bool(schema["up_to_date"]),
        graphs=graphs,
        service_area=request.app.state.graphs.service_area(),
        max_snap_m=request.app.state.settings.max_snap_m,
        outbox_lag_s=lag_s,
        deliveries=channels,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


# libpq's messages, reduced to what an operator needs (no host, socket path or user).
_REASONS = (
    ("starting up", "the database is starting up"),
    ("shutting down", "the database is shutting down"),
    ("recovery", "the database is in recovery"),
    ("no such file", "connection refused"),
    ("connection refused", "connection refused"),
    ("timeout", "connection timed out"),
    ("timed out", "connection timed out"),
    ("terminat", "connection lost"),
    ("closed", "connection lost"),
    ("too many", "too many connections"),
)


def unreachable_reason(exc: BaseException) -> str:
    """Why the database could not be used, e.g. "connection refused (OperationalError)"."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    name = type(exc).__name__
    reason = next((r for needle, r in _REASONS if needle in text), None)
    return f"{reason} ({name})" if reason else name


def _outbox_lag_s(request: Request) -> float | None:
    now = request.app.state.clock.now()
    try:
        with request.app.state.engine.connect() as conn:
            oldest = oldest_due(conn, now=now)
    except SQLAlchemyError:
        return None
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


def _deliveries(request: Request) -> dict[str, ChannelHealth] | None:
    settings: Settings = request.app.state.settings
    window = settings.health_delivery_window
    try:
        with request.app.state.engine.connect() as conn:
            outcomes = {c: recent_outcomes(conn, channel=c, limit=window) for c in CHANNELS}
    except SQLAlchemyError:
        return None
    report: dict[str, ChannelHealth] = {}
    for channel, rows in outcomes.items():
        configured = channel != "sms" or settings.sms_base_url is not None
        sent = sum(state == "sent" for state, _ in rows)
        errors = [error for state, error in rows if state != "sent"]
        if not configured:
            status = "not configured"
        elif sent == 0 and len(rows) >= window:
            status = "degraded"
        else:
            status = "ok" if rows else "idle"
        report[channel] = ChannelHealth(
            configured=configured,
            status=status,
            recent=len(rows),
            sent=sent,
            failed=len(errors),
            last_error=errors[0] if errors else None,
        )
    return report
