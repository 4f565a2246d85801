"""Request and answer bodies of the live-location routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from api.types import Point, RequestModel


class LocationPut(RequestModel):
    """An opt-in live location; it expires after ERN_LIVE_LOCATION_TTL_S."""

    location: Point


class LocationRead(BaseModel):
    """The caller's live location and when it stops counting."""

    location: Point
    updated_at: datetime
    expires_at: datetime
