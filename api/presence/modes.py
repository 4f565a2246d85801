"""Travel modes, role bits and the speeds presence ranking assumes per mode."""

from __future__ import annotations

from collections.abc import Sequence

from api.settings import Settings

MODES = ("walk", "bike", "drive")
ROLE_BITS = {"responder": 1, "defense": 2, "coordinator": 4}
# Straight-line fallback speed for drivers: an urban average including stops (30 km/h).
STRAIGHT_LINE_DRIVE_MPS = 30.0 / 3.6


def mask_of_roles(roles: Sequence[str] | frozenset[str]) -> int:
    """Bit mask of roles (ROLE_BITS; unknown roles add nothing)."""
    mask = 0
    for role in roles:
        mask |= ROLE_BITS.get(role, 0)
    return mask


def mode_speed_mps(settings: Settings, mode: str) -> float:
    """Speed the graph of ``mode`` assumes (walk, bike), or the straight-line drive speed."""
    if mode == "walk":
        return settings.walk_speed_mps
    if mode == "bike":
        return settings.bike_speed_mps
    return STRAIGHT_LINE_DRIVE_MPS
