"""POST /v1/groups/{group_id}/messages: a group text from a coordinator or the point contact."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response

from api.deps import ClockDep, CurrentMember, SessionDep, SettingsDep
from api.errors import ErrorBody
from api.groups import texts
from api.groups.texts import GroupTextCreate, GroupTextRead
from api.idempotency import IdempotencyKey, created_or_replayed

router = APIRouter(prefix="/v1/groups", tags=["groups"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": GroupTextRead, "description": "an idempotent retry: what this key sent"},
    401: {"model": ErrorBody, "description": "missing, bad or revoked token"},
    404: {
        "model": ErrorBody,
        "description": "no such current group, or the caller is neither a coordinator nor "
        "its point contact (the same answer)",
    },
    422: {
        "model": ErrorBody,
        "description": "invalid body, missing Idempotency-Key, or the key reused with "
        "another text (nothing sent)",
    },
    429: {
        "model": ErrorBody,
        "description": "ERN_GROUP_MESSAGE_RATE texts to this group in the last hour; "
        "Retry-After says when the next may go",
    },
}


@router.post(
    "/{group_id}/messages",
    response_model=GroupTextRead,
    status_code=201,
    summary="Text a buddy group (coordinators, the group's point contact)",
    responses=RESPONSES,
)
def send_group_text(
    group_id: uuid.UUID,
    body: GroupTextCreate,
    idempotency_key: IdempotencyKey,
    caller: CurrentMember,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Response:
    """Queue ``text`` to every member of the group, and its point contact, on their own
    channels; the answer says how many it went to, never who."""
    read, created = texts.send_text(
        session,
        settings,
        sender=caller,
        group_id=group_id,
        body=body,
        idempotency_key=idempotency_key,
        now=clock.now(),
    )
    return created_or_replayed(read, created=created)
