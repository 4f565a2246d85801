"""Members API: create, read, change, delete and list members; rotate and revoke tokens."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from api.deps import ClockDep, Coordinator, CurrentMember, GraphsDep, SessionDep, SettingsDep
from api.errors import ErrorBody
from api.members import service
from api.members.models import Member
from api.members.schemas import (
    MemberCreate,
    MemberCreated,
    MemberPage,
    MemberRead,
    MemberUpdate,
    TokenIssued,
)

router = APIRouter(prefix="/v1/members", tags=["members"])


def visible_member(member_id: uuid.UUID, caller: CurrentMember, session: SessionDep) -> Member:
    """The member named in the path if the caller may see it; else 404 (existence not told)."""
    return service.visible(session, caller, member_id)


MemberDep = Annotated[Member, Depends(visible_member)]

Responses = dict[int | str, dict[str, Any]]
E401: Responses = {401: {"model": ErrorBody, "description": "missing, bad or revoked token"}}
E403: Responses = {403: {"model": ErrorBody, "description": "the caller is not a coordinator"}}
E404: Responses = {
    404: {"model": ErrorBody, "description": "no such member, or not visible to the caller"}
}
E409: Responses = {409: {"model": ErrorBody, "description": "the handle is taken"}}
E413: Responses = {
    413: {"model": ErrorBody, "description": "request body larger than the limit (1 MB)"}
}
E422: Responses = {422: {"model": ErrorBody, "description": "invalid input; nothing was changed"}}


def _current_token_id(request: Request) -> uuid.UUID:
    token_id: uuid.UUID = request.state.api_token_id
    return token_id


@router.post(
    "",
    response_model=MemberCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a member (coordinators)",
    responses={**E401, **E403, **E409, **E413, **E422},
)
def create_member(
    body: MemberCreate,
    caller: Coordinator,
    session: SessionDep,
    settings: SettingsDep,
    graphs: GraphsDep,
) -> MemberCreated:
    """Create a member and return it with its bearer token, which is shown this once only."""
    member, token = service.create_member(session, settings, body, actor=caller, graphs=graphs)
    return MemberCreated(member=service.to_read(member, settings), token=token)


@router.get(
    "",
    response_model=MemberPage,
    summary="List members (coordinators)",
    responses={**E401, **E403, **E422},
)
def list_members(
    caller: Coordinator,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> MemberPage:
    """One page of members in handle order, with the total; no geometry or contact details."""
    return service.list_members(session, actor=caller, limit=limit, offset=offset)


@router.get(
    "/me",
    response_model=MemberRead,
    summary="The caller's own record",
    responses={**E401},
)
def read_me(caller: CurrentMember, settings: SettingsDep, clock: ClockDep) -> MemberRead:
    """The caller's member record, with zones, routes and contact details."""
    return service.to_read(caller, settings, now=clock.now())


@router.patch(
    "/me",
    response_model=MemberRead,
    summary="Change the caller's own record",
    responses={**E401, **E409, **E413, **E422},
)
def update_me(
    body: MemberUpdate,
    caller: CurrentMember,
    session: SessionDep,
    settings: SettingsDep,
    graphs: GraphsDep,
) -> MemberRead:
    """Change the fields sent; zones and routes replace the old lists; roles are refused (422)."""
    member = service.update_member(session, settings, caller, body, actor=caller, graphs=graphs)
    return service.to_read(member, settings)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Erase the caller",
    responses={**E401},
)
def erase_me(caller: CurrentMember, session: SessionDep) -> Response:
    """Erase the caller's record at once: zones, routes, location, contact, tokens; no undo."""
    service.delete_member(session, caller, actor=caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/me/token",
    response_model=TokenIssued,
    status_code=status.HTTP_201_CREATED,
    summary="Rotate the caller's token",
    responses={**E401},
)
def rotate_my_token(
    request: Request, caller: CurrentMember, session: SessionDep, clock: ClockDep
) -> TokenIssued:
    """Revoke the token this request carries and return a new one, shown this once only."""
    token = service.rotate_token(
        session, caller, actor=caller, now=clock.now(), token_id=_current_token_id(request)
    )
    return TokenIssued(member_id=caller.id, token=token)


@router.delete(
    "/me/token",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke the caller's token",
    responses={**E401},
)
def revoke_my_token(
    request: Request, caller: CurrentMember, session: SessionDep, clock: ClockDep
) -> Response:
    """Revoke the token this request carries (log out); other tokens stay valid."""
    service.revoke_tokens(
        session, caller, actor=caller, now=clock.now(), token_id=_current_token_id(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{member_id}",
    response_model=MemberRead,
    summary="One member",
    responses={**E401, **E404, **E422},
)
def read_member(
    member: MemberDep,
    caller: CurrentMember,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> MemberRead:
    """One member with zones, routes and contact details (itself, or anyone for coordinators)."""
    read = service.read_member(session, member, actor=caller)
    return service.to_read(read, settings, now=clock.now())


@router.patch(
    "/{member_id}",
    response_model=MemberRead,
    summary="Change a member",
    responses={**E401, **E404, **E409, **E413, **E422},
)
def update_member(
    member: MemberDep,
    body: MemberUpdate,
    caller: CurrentMember,
    session: SessionDep,
    settings: SettingsDep,
    graphs: GraphsDep,
) -> MemberRead:
    """Change the fields sent; only coordinators may change roles (others get 422)."""
    updated = service.update_member(session, settings, member, body, actor=caller, graphs=graphs)
    return service.to_read(updated, settings)


@router.delete(
    "/{member_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a member",
    responses={**E401, **E404, **E422},
)
def delete_member(member: MemberDep, caller: CurrentMember, session: SessionDep) -> Response:
    """Delete a member with its zones, routes and tokens (itself, or anyone for coordinators)."""
    service.delete_member(session, member, actor=caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{member_id}/token",
    response_model=TokenIssued,
    status_code=status.HTTP_201_CREATED,
    summary="Replace all of a member's tokens",
    responses={**E401, **E404, **E422},
)
def rotate_member_token(
    member: MemberDep, caller: CurrentMember, session: SessionDep, clock: ClockDep
) -> TokenIssued:
    """Revoke every token of the member and return a new one (e.g. a lost phone)."""
    token = service.rotate_token(session, member, actor=caller, now=clock.now())
    return TokenIssued(member_id=member.id, token=token)


@router.delete(
    "/{member_id}/token",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke all of a member's tokens",
    responses={**E401, **E404, **E422},
)
def revoke_member_tokens(
    member: MemberDep, caller: CurrentMember, session: SessionDep, clock: ClockDep
) -> Response:
    """Revoke every token of the member; it can no longer call the API until given a new one."""
    service.revoke_tokens(session, member, actor=caller, now=clock.now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
