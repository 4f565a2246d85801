"""Coordinator view of the notification outbox: which deliveries went out, which failed and why."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Coordinator, CurrentCaller, SessionDep, SettingsDep
from api.errors import COMMON_RESPONSES, ErrorBody
from api.notify import service
from api.notify.channels import webhook_signing_key
from api.notify.schemas import DeliveryPage, State, WebhookKey

router = APIRouter(prefix="/v1/deliveries", tags=["notifications"])
# The caller's own webhook key lives under /v1/members/me with the caller's other own things.
key_router = APIRouter(prefix="/v1/members/me/webhook-key", tags=["notifications"])


@key_router.get(
    "",
    response_model=WebhookKey,
    summary="The caller's webhook signing key",
    responses={**COMMON_RESPONSES},
)
def my_webhook_key(caller: CurrentCaller, settings: SettingsDep) -> WebhookKey:
    """The key X-Ern-Signature is made with for webhooks to the caller (theirs alone)."""
    return WebhookKey(key=webhook_signing_key(settings, caller.id).hex())


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
