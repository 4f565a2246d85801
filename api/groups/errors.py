"""Errors of the buddy-groups domain."""

from __future__ import annotations

from api.alerts.errors import RateLimited
from api.errors import Conflict, Forbidden, NotFound, Unprocessable


class ProposalNotFound(NotFound):
    """No proposal with that id."""


class ProposalPublished(Conflict):
    """The proposal was published already."""


class GroupNotFound(NotFound):
    """No group with that id, or none the caller may see (no existence oracle)."""


class GroupFull(Conflict):
    """The group holds the most members a group may hold."""


class GroupRetired(Unprocessable):
    """The group was replaced by a later publish: history is not edited."""


class ModeMismatch(Unprocessable):
    """The member travels in another mode than the group."""


class ModeUnavailable(Unprocessable):
    """No street graph is loaded for the requested mode."""


class HistoryForbidden(Forbidden):
    """Only coordinators list retired groups."""


class GroupTextKeyReused(Unprocessable):
    """The Idempotency-Key was already used by this sender for another text to the group."""


class GroupTextRateLimited(RateLimited):
    """The group was sent ERN_GROUP_MESSAGE_RATE texts in the last hour already."""
