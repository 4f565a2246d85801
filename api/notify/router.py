"""Coordinator view of the notification outbox: which deliveries went out, which failed and why."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Coordinator, SessionDep
from api.errors import COMMON_RESPONSES, ErrorBody
from api.notify import service
from api.notify.schemas import DeliveryPage, State

router = APIRouter(prefix="/v1/deliveries", tags=["notifications"])


@router.get(
    "",
    response_model=DeliveryPage,
    summary="List deliveries (coordinators)",
    responses={**COMMON_RESPONSES, 403: {"model": ErrorBody, "description": "not a coordinator"}},
)
def list_deliveries(
    caller: Coordinator,
    session: SessionDep,
    alert_id: uuid.UUID | None = None,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DeliveryPage:
    """Deliveries newest first, by alert and state; last errors, never contact details."""
    return service.list_deliveries(
        session, actor=caller, alert_id=alert_id, state=state, limit=limit, offset=offset
    )
