"""Request and answer bodies of the live-location routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel

from api.types import Point, RequestModel


class LocationPut(RequestModel):
    """An opt-in live location; it expires after ERN_LIVE_LOCATION_TTL_S."""

    location: Point


class LocationRead(BaseModel):
    """The caller's live location and when it stops counting."""

    location: Point
    updated_at: datetime
    expires_at: datetime


class SnoozePut(RequestModel):
    """No alerts until ``until`` (ISO 8601 with a UTC offset; at most 7 days ahead)."""

    until: AwareDatetime


class SnoozeRead(BaseModel):
    """Until when the caller gets no alerts (null: not snoozed)."""

    snoozed_until: datetime | None
