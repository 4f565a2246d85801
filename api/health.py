"""GET /healthz: database, schema and graph status for operators and load balancers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from api.database import schema_status

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Overall status and its parts."""

    status: str
    database: str
    schema_revision: str | None
    schema_head: str | None
    schema_up_to_date: bool
    graphs: dict[str, str]


@router.get(
    "/healthz",
    response_model=Health,
    summary="Service health",
    responses={503: {"model": Health, "description": "database down or schema behind"}},
)
def healthz(request: Request) -> Any:
    """Database reachability, schema revision and loaded graphs; 503 unless the DB is ready."""
    graphs = request.app.state.graphs.status()
    try:
        schema = schema_status(request.app.state.engine)
        database = "ok"
    except SQLAlchemyError as exc:
        schema = {"current": None, "head": None, "up_to_date": False}
        database = f"unreachable: {type(exc).__name__}"
    ok = database == "ok" and bool(schema["up_to_date"])
    body = Health(
        status="ok" if ok else "degraded",
        database=database,
        schema_revision=schema["current"],  # type: ignore[arg-type]
        schema_head=schema["head"],  # type: ignore[arg-type]
        schema_up_to_date=bool(schema["up_to_date"]),
        graphs=graphs,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
