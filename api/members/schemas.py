"""Request and response bodies of the members API (GeoJSON geometries, local "HH:MM" times)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from api.types import Days, LineString, NoNul, PlainText, Polygon, RequestModel, TimeWindow

Role = Literal["responder", "defense", "coordinator"]
Mode = Literal["walk", "bike", "drive"]
Handle = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
    Field(description="unique public name: letters, digits, '_', '.', '-'", examples=["rosa"]),
]
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), NoNul
]
Phone = Annotated[
    str,
    StringConstraints(pattern=r"^\+[1-9]\d{6,14}$"),
    Field(description="E.164, e.g. +4962210000000"),
]
HOME_ZONE_RULES = (
    "an area, never an address: at least ERN_MIN_ZONE_M2 (default 40,000 m²), at most 25 km², "
    "at most 2,000 vertices, no self-intersection; holes are allowed. Required for the responder "
    "and defense roles; null removes it (PATCH)"
)
MAX_ZONES = 20
MAX_ROUTES = 20
# Faster than any car in a city: anything above is a typo, not a speed.
MAX_SPEED_MPS = 70.0


_Body = RequestModel


def _unique_roles(roles: list[Role]) -> list[Role]:
    if len(set(roles)) != len(roles):
        msg = "roles must not repeat"
        raise ValueError(msg)
    order = ("responder", "defense", "coordinator")
    return sorted(roles, key=order.index)


Roles = Annotated[list[Role], Field(max_length=3), AfterValidator(_unique_roles)]

SharedChannel = Literal["email", "phone"]


def _unique_channels(channels: list[SharedChannel]) -> list[SharedChannel]:
    if len(set(channels)) != len(channels):
        msg = "channels must not repeat"
        raise ValueError(msg)
    return sorted(channels)


ShareWithGroup = Annotated[
    list[SharedChannel],
    Field(
        max_length=2,
        description="contact channels shown to the member's buddy group on its roster",
    ),
    AfterValidator(_unique_channels),
]


class Contact(_Body):
    """How to reach a member; any subset. Stored encrypted."""

    email: Email | None = None
    phone: Phone | None = None
    webhook_url: Annotated[AnyHttpUrl, Field(max_length=2048)] | None = None


class QuietHours(TimeWindow):
    """Local hours in which the member is not alerted (may cross midnight)."""


class ZoneIn(TimeWindow):
    """A scheduled zone: an area where the member is on ``days`` between ``start`` and ``end``."""

    name: Annotated[PlainText, StringConstraints(min_length=1, max_length=64)]
    area: Polygon = Field(description="same size rules as the home zone")
    days: Days


class ZoneRead(ZoneIn):
    """A stored scheduled zone."""

    id: uuid.UUID


class RouteIn(TimeWindow):
    """A regular journey along ``path`` on ``days`` between ``start`` and ``end``."""

    path: LineString = Field(description="at most 100 km and 2,000 vertices")
    days: Days
    mode: Mode | None = Field(default=None, description="travel mode; default: the member's")


class RouteRead(RouteIn):
    """A stored route."""

    id: uuid.UUID


class MemberCreate(_Body):
    """A new member. Responders and defence volunteers need a home zone."""

    handle: Handle
    roles: Roles = Field(default_factory=list)
    mode: Mode = "walk"
    speed_mps: Annotated[float, Field(gt=0, le=MAX_SPEED_MPS, allow_inf_nan=False)] | None = None
    home_zone: Polygon | None = Field(default=None, description=HOME_ZONE_RULES)
    zones: Annotated[list[ZoneIn], Field(max_length=MAX_ZONES)] = Field(default_factory=list)
    routes: Annotated[list[RouteIn], Field(max_length=MAX_ROUTES)] = Field(default_factory=list)
    available: bool = True
    quiet_hours: QuietHours | None = None
    contact: Contact | None = None
    share_with_group: ShareWithGroup = Field(default_factory=list)


# Fields of MemberUpdate that may be null (null clears them); the rest may only be omitted.
NULLABLE_UPDATES = frozenset({"speed_mps", "home_zone", "quiet_hours", "contact"})


def _only_nullable_updates_take_null(schema: dict[str, Any]) -> None:
    # The Python types say None ("not sent"); the OpenAPI schema says what a client may send.
    for name, prop in schema.get("properties", {}).items():
        if name in NULLABLE_UPDATES or "anyOf" not in prop:
            continue
        kept = [branch for branch in prop.pop("anyOf") if branch != {"type": "null"}]
        if len(kept) == 1:
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept
        prop.pop("default", None)


class MemberUpdate(_Body):
    """A partial change: only the fields sent change; ``zones``/``routes`` replace the lists."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_only_nullable_updates_take_null)

    handle: Handle | None = None
    roles: Roles | None = Field(default=None, description="coordinators only")
    mode: Mode | None = None
    speed_mps: Annotated[float, Field(gt=0, le=MAX_SPEED_MPS, allow_inf_nan=False)] | None = None
    home_zone: Polygon | None = Field(default=None, description=HOME_ZONE_RULES)
    zones: Annotated[list[ZoneIn], Field(max_length=MAX_ZONES)] | None = None
    routes: Annotated[list[RouteIn], Field(max_length=MAX_ROUTES)] | None = None
    available: bool | None = None
    quiet_hours: QuietHours | None = None
    contact: Contact | None = None
    share_with_group: ShareWithGroup | None = None

    @model_validator(mode="after")
    def _nulls(self) -> Self:
        for name in sorted(self.model_fields_set - NULLABLE_UPDATES):
            if getattr(self, name) is None:
                msg = f"{name} may not be null"
                raise ValueError(msg)
        return self


class MemberRead(BaseModel):
    """A member as the member itself and coordinators see it."""

    id: uuid.UUID
    handle: str
    roles: list[Role]
    mode: Mode
    speed_mps: float | None
    home_zone: Polygon | None
    zones: list[ZoneRead]
    routes: list[RouteRead]
    available: bool
    quiet_hours: QuietHours | None
    contact: Contact
    share_with_group: list[SharedChannel] = Field(default_factory=list)
    # No alerts until then (null: not snoozed); never why.
    snoozed_until: datetime | None = None
    created_at: datetime
    updated_at: datetime


class MemberSummary(BaseModel):
    """A member in a list: no geometry, no contact (read one member for those; that is audited)."""

    id: uuid.UUID
    handle: str
    roles: list[Role]
    mode: Mode
    available: bool
    has_home_zone: bool
    created_at: datetime


class MemberPage(BaseModel):
    """One page of members and the total count."""

    items: list[MemberSummary]
    total: int
    limit: int
    offset: int


class MemberCreated(BaseModel):
    """A new member and its bearer token; the token is shown this once only."""

    member: MemberRead
    token: str


class TokenIssued(BaseModel):
    """A new bearer token, shown this once only."""

    member_id: uuid.UUID
    token: str
