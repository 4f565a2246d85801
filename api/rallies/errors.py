"""Errors of the rallies domain."""

from __future__ import annotations

from api.errors import Unprocessable


class RallyKeyReused(Unprocessable):
    """The Idempotency-Key was already used for a different rally."""
