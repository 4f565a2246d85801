"""Buddy groups API: build and publish proposals, read groups and rosters, move members."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.exceptions import HTTPException

from api.deps import ClockDep, Coordinator, CurrentMember, SessionDep, SettingsDep
from api.errors import ErrorBody
from api.groups import service
from api.groups.models import BuddyGroup
from api.groups.schemas import BuildRequest, GroupList, GroupRead, MoveMember, Proposal, Roster

router = APIRouter(prefix="/v1/groups", tags=["groups"])

Responses = dict[int | str, dict[str, Any]]
E401: Responses = {401: {"model": ErrorBody, "description": "missing, bad or revoked token"}}
E403: Responses = {403: {"model": ErrorBody, "description": "the caller is not a coordinator"}}
E404: Responses = {
    404: {"model": ErrorBody, "description": "no such group, or not one the caller is in"}
}
E422: Responses = {422: {"model": ErrorBody, "description": "invalid input; nothing was changed"}}


def visible_group(group_id: uuid.UUID, caller: CurrentMember, session: SessionDep) -> BuddyGroup:
    """The group named in the path if the caller may see it; else 404 (existence not told)."""
    return service.visible_group(session, caller, group_id)


GroupDep = Annotated[BuddyGroup, Depends(visible_group)]


@router.post(
    "/build",
    response_model=Proposal,
    status_code=201,
    summary="Propose buddy groups (coordinators)",
    responses={
        **E401,
        **E403,
        422: {
            "model": ErrorBody,
            "description": "invalid body (min_size above max_size), or no graph for the mode",
        },
    },
)
def build(
    request: Request,
    body: BuildRequest,
    caller: Coordinator,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> Proposal:
    """Group the members of one mode by shared streets at the same hours; nothing is published."""
    return service.build(
        session,
        request.app.state.graphs,
        settings,
        body=body,
        coordinator=caller,
        now=clock.now(),
    )


# GET /v1/groups/build would otherwise reach /v1/groups/{group_id} and fail on "build" as a
# UUID (422): it is a resource that only takes POST, so other methods get 405 and Allow: POST.
@router.api_route("/build", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def build_other_methods() -> None:
    """405: only POST builds a proposal."""
    raise HTTPException(status_code=405, detail="Method Not Allowed")


@router.post(
    "/proposals/{proposal_id}/publish",
    response_model=GroupList,
    summary="Publish a proposal: its groups become current (coordinators)",
    responses={
        **E401,
        **E403,
        404: {"model": ErrorBody, "description": "no such proposal"},
        409: {"model": ErrorBody, "description": "the proposal was published already"},
        **E422,
    },
)
def publish(
    proposal_id: uuid.UUID,
    caller: Coordinator,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> GroupList:
    """Retire the current groups of the mode (kept as history), publish these, tell members."""
    return service.publish(
        session, settings, proposal_id=proposal_id, coordinator=caller, now=clock.now()
    )


@router.get(
    "",
    response_model=GroupList,
    summary="List groups (coordinators: all; members: their own)",
    responses={
        **E401,
        403: {"model": ErrorBody, "description": "history asked for by a non-coordinator"},
        **E422,
    },
)
def list_groups(
    caller: CurrentMember,
    session: SessionDep,
    history: Annotated[
        bool, Query(description="coordinators: retired groups too, with retired_at")
    ] = False,
) -> GroupList:
    """Current groups; a member gets the group it is in and those it is the point contact of."""
    return service.list_groups(session, caller=caller, history=history)


@router.get(
    "/{group_id}",
    response_model=GroupRead,
    summary="Read a group",
    responses={**E401, **E404, **E422},
)
def read_group(group: GroupDep, session: SessionDep) -> GroupRead:
    """Members' handles, the point contact and the shared minutes of one group."""
    return service.read_group(session, group)


@router.get(
    "/{group_id}/roster",
    response_model=Roster,
    summary="The group's roster (JSON, or CSV with Accept: text/csv)",
    responses={
        200: {
            "description": "handles and only the channels each member agreed to share",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **E401,
        **E404,
        **E422,
    },
)
def read_roster(
    request: Request,
    group: GroupDep,
    caller: CurrentMember,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """Members' handles and the channels each listed in share_with_group; nothing else."""
    data = service.roster(session, settings, group, caller=caller)
    if "text/csv" in request.headers.get("accept", ""):
        return Response(
            service.roster_csv(data),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="group-{group.id}.csv"'},
        )
    return Response(data.model_dump_json(), media_type="application/json")


@router.post(
    "/{group_id}/members",
    response_model=GroupRead,
    summary="Move a member into this group (coordinators)",
    responses={
        **E401,
        **E403,
        404: {"model": ErrorBody, "description": "no such group or member"},
        409: {"model": ErrorBody, "description": "the group is full"},
        422: {
            "model": ErrorBody,
            "description": "invalid body, a retired group, or a member of another mode",
        },
    },
)
def move_member(
    group_id: uuid.UUID,
    body: MoveMember,
    caller: Coordinator,
    session: SessionDep,
) -> GroupRead:
    """Take the member out of its current group, if any, and into this one (at most 10)."""
    return service.move_member(
        session, group_id=group_id, member_id=body.member_id, coordinator=caller
    )
