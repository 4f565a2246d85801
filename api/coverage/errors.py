"""Errors of the coverage domain."""

from __future__ import annotations

from api.errors import Conflict


class ModeWithoutGraph(Conflict):
    """The requested mode has no loaded street graph."""
