"""Errors of the members domain."""

from __future__ import annotations

from api.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)


class MemberNotFound(NotFound):
    """No such member, or the caller may not see it (the two are not told apart)."""


class HandleTaken(Conflict):
    """Another member already uses this handle."""


class InvalidToken(Unauthorized):
    """The bearer token is missing, unknown or revoked."""


class RoleRequired(Forbidden):
    """The caller lacks the role this route needs."""


class FieldNotAllowed(Unprocessable):
    """The caller may not set this field (e.g. a member granting itself roles)."""


class InvalidMember(Unprocessable):
    """The member as a whole breaks a rule (e.g. a responder without a home zone)."""


class ContactUnreadable(ServiceUnavailable):
    """Stored contact details cannot be decrypted: ERN_SECRET_KEY changed, or the row is bad."""
