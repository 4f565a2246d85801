"""All SQL of the coverage domain: the presence token and past alert locations."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.alerts.models import Alert
from api.presence import repository as presence_repo


def presence_token(session: Session) -> uuid.UUID | None:
    """The token that changes with every write to members, zones or routes."""
    return presence_repo.presence_token(session)


def alert_points(session: Session, *, since: datetime) -> list[tuple[float, float, datetime]]:
    """(lon, lat, created_at) of the real alerts (exercises excluded) raised since ``since``."""
    rows = session.execute(
        select(func.ST_X(Alert.location), func.ST_Y(Alert.location), Alert.created_at)
        .where(Alert.created_at >= since, Alert.exercise.is_(False))
        .order_by(Alert.created_at)
    ).all()
    return [(float(x), float(y), at) for x, y, at in rows]
