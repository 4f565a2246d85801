"""What an alert message says about an alert, and where the alert is."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from geoalchemy2.shape import to_shape

from api.alerts.models import Alert


@dataclass(frozen=True)
class AlertFacts:
    """What an alert message says about the alert (known before the alert is stored)."""

    id: uuid.UUID
    kind: str
    needed: int
    note: str | None
    lon: float
    lat: float

    @classmethod
    def of(cls, alert: Alert) -> AlertFacts:
        """The facts of a stored alert."""
        lon, lat = lonlat(alert)
        return cls(
            id=alert.id, kind=alert.kind, needed=alert.needed, note=alert.note, lon=lon, lat=lat
        )


def lonlat(alert: Alert) -> tuple[float, float]:
    """The alert's (lon, lat)."""
    point = to_shape(alert.location)
    return float(point.x), float(point.y)
