"""Alert errors and their HTTP status codes."""

from __future__ import annotations

from api.errors import Conflict, ErnError, Forbidden, NotFound, Unprocessable


class AlertNotFound(NotFound):
    """No such alert, or the caller may not see it (the two are indistinguishable on purpose)."""


class IdempotencyKeyReused(Unprocessable):
    """The Idempotency-Key was already used by this member for a different request body."""


class CoordinatorOnly(Forbidden):
    """A field or action reserved to coordinators (``at``, ``exercise``, listing alerts)."""


class NotAllowedToClose(Forbidden):
    """Only the requester or a coordinator closes an alert."""


class AlertClosed(Conflict):
    """The alert is closed; answers can no longer change."""


class StoodDown(Conflict):
    """Enough responders accepted and this member was stood down; the offer is not needed."""


class RateLimited(ErnError):
    """Too many alerts from this member in the last hour."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}
