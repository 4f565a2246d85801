"""Errors of the presence domain."""

from __future__ import annotations

from api.errors import Unprocessable


class SnoozeOutOfRange(Unprocessable):
    """A snooze must end in the future and at most 7 days ahead."""
