"""Rally request and answer bodies."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field

from api.types import PlainText, Point, RequestModel

MAX_RALLY_MINUTES = 120
MAX_RALLY_TEXT = 500


class RallyCreate(RequestModel):
    """POST /v1/rallies: tell everyone usually within ``minutes`` of a place at ``at``."""

    location: Point
    at: AwareDatetime = Field(description="when people usually near the place are meant")
    minutes: int = Field(ge=1, le=MAX_RALLY_MINUTES, description="travel time from the place")
    text: PlainText = Field(min_length=1, max_length=MAX_RALLY_TEXT)
    everyone: bool = Field(default=False, description="every member, not only available responders")


class RallyRead(BaseModel):
    """How many the notice went to; never who."""

    id: uuid.UUID
    sent_count: int
    created_at: datetime
