"""POST /v1/rallies: a coordinator's notice to everyone usually near a place at a time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import ClockDep, Coordinator, SessionDep, SettingsDep
from api.errors import ErrorBody
from api.idempotency import IdempotencyKey, created_or_replayed
from api.rallies import service
from api.rallies.schemas import RallyCreate, RallyRead

router = APIRouter(prefix="/v1/rallies", tags=["rallies"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": RallyRead, "description": "an idempotent retry: what this key sent"},
    401: {"model": ErrorBody, "description": "missing, bad or revoked token"},
    403: {"model": ErrorBody, "description": "the caller is not a coordinator"},
    422: {
        "model": ErrorBody,
        "description": "invalid body, missing Idempotency-Key, key reused with another body, "
        "or a place outside the service area (nothing sent)",
    },
}


@router.post(
    "",
    response_model=RallyRead,
    status_code=201,
    summary="Send a rally notice (coordinators)",
    responses=RESPONSES,
)
def create_rally(
    request: Request,
    body: RallyCreate,
    idempotency_key: IdempotencyKey,
    caller: Coordinator,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Response:
    """Queue ``text`` to every available responder (``everyone``: member) usually within
    ``minutes`` of the place at ``at``; the answer says how many, never who."""
    read, created = service.send_rally(
        session,
        request.app.state.graphs,
        settings,
        coordinator=caller,
        body=body,
        idempotency_key=idempotency_key,
        now=clock.now(),
    )
    return created_or_replayed(read, created=created)
