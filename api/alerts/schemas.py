"""Alert request and answer bodies: one view per party (requester, notified member, coordinator)."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from api.types import PlainText, Point, RequestModel

Kind = Literal["personal", "mass", "defense"]
Status = Literal["open", "fulfilled", "closed"]
RankingMethod = Literal["street_network", "straight_line"]
State = Literal["ranked", "notified", "accepted", "declined", "stood_down", "exercise"]
# A personal or defence alert asks for a handful of people; 100 is far beyond any real need
# and keeps the first wave (needed / acceptance rate) bounded.
MAX_NEEDED = 100
MAX_NOTE_CHARS = 500
MAX_IDEMPOTENCY_KEY_CHARS = 200
ETA_STEP_S = 30


class AlertCreate(RequestModel):
    """POST /v1/alerts body; ``at`` and ``exercise`` are for coordinators only."""

    location: Point
    kind: Kind
    needed: int = Field(ge=1, le=MAX_NEEDED)
    note: PlainText | None = Field(default=None, max_length=MAX_NOTE_CHARS)
    at: AwareDatetime | None = Field(
        default=None, description="coordinators: evaluate presence at this time (drills, tests)"
    )
    exercise: bool = Field(
        default=False, description="coordinators: rank and record, deliver to no live channel"
    )
    include_busy: bool = Field(
        default=False,
        description="coordinators, mass alerts: also rank members already on their way to "
        "another open alert (snoozed members never)",
    )

    @model_validator(mode="after")
    def _busy_only_for_mass(self) -> Self:
        if self.include_busy and self.kind != "mass":
            msg = "`include_busy` is for mass alerts only"
            raise ValueError(msg)
        return self


class ResponseCreate(RequestModel):
    """A notified member's answer."""

    answer: Literal["accept", "decline"]


class AcceptedResponder(BaseModel):
    """Someone who accepted: handle and ETA rounded up to 30 s steps."""

    handle: str
    eta_s: int


class AlertRequesterView(BaseModel):
    """The requester's view: status, counts, who accepted (rounded ETAs); nobody's coordinates."""

    view: Literal["requester"] = "requester"
    id: uuid.UUID
    status: Status
    kind: Kind
    ranking: RankingMethod
    needed: int
    note: str | None
    location: Point
    exercise: bool
    notified_count: int
    accepted: list[AcceptedResponder]
    created_at: datetime
    closed_at: datetime | None


class AlertResponderView(BaseModel):
    """What a notified member sees: where, what, who asked, and their own state."""

    view: Literal["responder"] = "responder"
    id: uuid.UUID
    status: Status
    kind: Kind
    location: Point
    note: str | None
    requester_handle: str | None
    state: State
    eta_s: int
    created_at: datetime


class ResponderRow(BaseModel):
    """One ranked candidate, for coordinators."""

    member_id: uuid.UUID
    handle: str
    eta_s: float
    wave: int | None
    state: State


class AlertCoordinatorView(AlertRequesterView):
    """Everything about an alert, including the ranked list best first (coordinators only)."""

    view: Literal["coordinator"] = "coordinator"  # type: ignore[assignment]
    requester_id: uuid.UUID | None
    requester_handle: str | None
    presence_at: datetime
    wave: int
    next_wave_at: datetime | None
    fulfilled_at: datetime | None
    responders: list[ResponderRow]


AlertView = AlertCoordinatorView | AlertRequesterView | AlertResponderView


class AlertSummary(BaseModel):
    """One alert in a coordinator's list."""

    id: uuid.UUID
    status: Status
    kind: Kind
    ranking: RankingMethod
    needed: int
    exercise: bool
    location: Point
    requester_handle: str | None
    notified_count: int
    accepted_count: int
    created_at: datetime
    closed_at: datetime | None


class AlertPage(BaseModel):
    """A page of alerts, newest first."""

    items: list[AlertSummary]
    limit: int
    offset: int


def rounded_eta_s(eta_s: float) -> int:
    """ETA rounded up to the next 30 s step: the requester is never promised an earlier arrival."""
    return int(math.ceil(eta_s / ETA_STEP_S - 1e-9) * ETA_STEP_S)
