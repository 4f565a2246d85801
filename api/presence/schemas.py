"""Request and answer bodies of the live-location routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from api.types import Point


class LocationPut(BaseModel):
    """An opt-in live location; it expires after ERN_LIVE_LOCATION_TTL_S."""

    model_config = ConfigDict(extra="forbid")

    location: Point


class LocationRead(BaseModel):
    """The caller's live location and when it stops counting."""

    location: Point
    updated_at: datetime
    expires_at: datetime
