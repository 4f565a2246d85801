"""Buddy-group request and answer bodies (the build answer's core is a contract: keep its names)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from api.types import RequestModel
from geo.buddies import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, HARD_MAX_SIZE

Mode = Literal["walk", "bike", "drive"]


class BuildRequest(RequestModel):
    """POST /v1/groups/build: propose groups of one travel mode; nothing changes until publish."""

    max_size: int = Field(default=DEFAULT_MAX_SIZE, ge=2, le=HARD_MAX_SIZE)
    min_size: int = Field(
        default=DEFAULT_MIN_SIZE,
        ge=1,
        le=HARD_MAX_SIZE,
        description="at most max_size; not sent: 3, or max_size if that is smaller",
    )
    mode: Mode = "walk"
    keep: bool = Field(
        default=False, description="members of the current groups stay together where they overlap"
    )

    @field_validator("min_size")
    @classmethod
    def _at_most_max_size(cls, value: int, info: ValidationInfo) -> int:
        max_size = info.data.get("max_size")
        if max_size is not None and value > max_size:
            msg = f"must be at most max_size ({max_size}), got {value}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _default_min_size_fits(self) -> Self:
        # Only a min_size that was sent can be wrong; the default shrinks to a smaller max_size.
        if "min_size" not in self.model_fields_set:
            self.min_size = min(self.min_size, self.max_size)
        return self


class ProposedGroup(BaseModel):
    """One proposed group (contract): member ids, its point contact, shared minutes a week."""

    members: list[uuid.UUID]
    point_contact: uuid.UUID | None
    shared_minutes: float


class ProposalQuality(BaseModel):
    """The quality report (the first four are the contract)."""

    mean_shared_minutes: float
    random_baseline: float
    locality_baseline: float
    placed_share: float
    size_histogram: dict[int, int] = Field(description="group size -> number of groups")


class UnmatchedRoute(BaseModel):
    """A route that could not be matched to the mode's streets, and why."""

    member_id: uuid.UUID
    route_id: uuid.UUID
    reason: str


class Proposal(BaseModel):
    """A stored proposal: the contract body plus contacts' ETAs, unmatched routes, timings."""

    proposal_id: uuid.UUID
    groups: list[ProposedGroup]
    unplaced: list[uuid.UUID]
    quality: ProposalQuality
    mode: Mode
    max_size: int
    min_size: int
    keep: bool
    contact_eta_s: list[float | None] = Field(description="per group, its point contact's ETA")
    no_contact: list[int] = Field(
        description="indices of groups without a point contact within ERN_CONTACT_MAX_ETA_S"
    )
    unmatched: list[UnmatchedRoute]
    timings_s: dict[str, float]
    created_at: datetime


class MemberRef(BaseModel):
    """A member as other members of its group see it: id and handle only."""

    id: uuid.UUID
    handle: str


class GroupRead(BaseModel):
    """A published group (``retired_at`` set: replaced by a later publish, kept as history)."""

    id: uuid.UUID
    members: list[MemberRef]
    point_contact: MemberRef | None
    shared_minutes: float
    mode: Mode
    published_at: datetime
    retired_at: datetime | None = None


class GroupList(BaseModel):
    """Groups, newest publish first."""

    items: list[GroupRead]


class RosterEntry(BaseModel):
    """A handle and only the channels its member chose to share with its group."""

    handle: str
    email: str | None = None
    phone: str | None = None


class Roster(BaseModel):
    """Who is in the group and how to reach those who agreed to it."""

    group_id: uuid.UUID
    items: list[RosterEntry]
    point_contact: RosterEntry | None


class MoveMember(RequestModel):
    """POST /v1/groups/{group_id}/members: move a member into this current group."""

    member_id: uuid.UUID
