"""GET /healthz: database, schema and graph status for operators and load balancers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from api.database import schema_status
from api.notify.repository import oldest_due

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Overall status and its parts."""

    status: str
    database: str
    schema_revision: str | None
    schema_head: str | None
    schema_up_to_date: bool
    graphs: dict[str, str]
    outbox_lag_s: float | None = Field(
        description="how long the longest-waiting notification has been due without being "
        "sent (0: none waiting); it grows while no worker delivers, and the status stays ok "
        "(the API itself works); null when the database is not ready"
    )


@router.get(
    "/healthz",
    response_model=Health,
    summary="Service health",
    responses={503: {"model": Health, "description": "database down or schema behind"}},
)
def healthz(request: Request) -> Any:
    """Database, schema revision, graphs and outbox lag; 503 unless the database is ready."""
    graphs = request.app.state.graphs.status()
    try:
        schema = schema_status(request.app.state.engine)
        database = "ok"
    except SQLAlchemyError as exc:
        schema = {"current": None, "head": None, "up_to_date": False}
        database = f"unreachable: {type(exc).__name__}"
    ok = database == "ok" and bool(schema["up_to_date"])
    lag_s = _outbox_lag_s(request) if ok else None
    body = Health(
        status="ok" if ok else "degraded",
        database=database,
        schema_revision=schema["current"],  # type: ignore[arg-type]
        schema_head=schema["head"],  # type: ignore[arg-type]
        schema_up_to_date=bool(schema["up_to_date"]),
        graphs=graphs,
        outbox_lag_s=lag_s,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def _outbox_lag_s(request: Request) -> float | None:
    now = request.app.state.clock.now()
    try:
        with request.app.state.engine.connect() as conn:
            oldest = oldest_due(conn, now=now)
    except SQLAlchemyError:
        return None
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
