"""Live location routes: PUT and DELETE /v1/members/me/location (the caller's own, opt-in)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from api.deps import ClockDep, CurrentMember, SessionDep, SettingsDep
from api.errors import ErrorBody
from api.presence import service
from api.presence.schemas import LocationPut, LocationRead, SnoozePut, SnoozeRead

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


# Snoozes: PUT and DELETE /v1/members/me/snooze; included in create_app beside the router above.
snooze_router = APIRouter(prefix="/v1/members/me/snooze", tags=["presence"])


@snooze_router.put(
    "",
    response_model=SnoozeRead,
    summary="Pause my alerts until a time",
    responses={**E401, 422: {"model": ErrorBody, "description": "past or > 7 days ahead"}},
)
def put_snooze(
    body: SnoozePut, member: CurrentMember, session: SessionDep, clock: ClockDep
) -> SnoozeRead:
    """No alerts for the caller until ``until`` (at most 7 days ahead); it ends by itself then."""
    return service.put_snooze(session, member_id=member.id, until=body.until, now=clock.now())


@snooze_router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Resume my alerts",
    responses={**E401},
)
def delete_snooze(member: CurrentMember, session: SessionDep) -> Response:
    """End the caller's snooze now (idempotent); also resumes after an SMS "stop"."""
    service.delete_snooze(session, member_id=member.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
