"""Live location routes: PUT and DELETE /v1/members/me/location (the caller's own, opt-in)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from api.deps import ClockDep, CurrentMember, SessionDep, SettingsDep
from api.errors import ErrorBody
from api.presence import service
from api.presence.schemas import LocationPut, LocationRead

# Its own router (not the members one): the lead includes it in create_app.
router = APIRouter(prefix="/v1/members/me/location", tags=["presence"])

E401: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, bad or revoked token"}
}
E422: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid location"}
}


@router.put(
    "",
    response_model=LocationRead,
    summary="Share my live location",
    responses={**E401, **E422},
)
def put_location(
    body: LocationPut,
    member: CurrentMember,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> LocationRead:
    """Share the caller's live location; alerts rank the caller from it until it expires."""
    location: LocationRead = service.put_location(
        session, settings, member_id=member.id, location=body.location, now=clock.now()
    )
    return location


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop sharing my live location",
    responses={**E401},
)
def delete_location(member: CurrentMember, session: SessionDep) -> Response:
    """Forget the caller's live location at once (idempotent)."""
    service.delete_location(session, member_id=member.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
