"""Bearer-token authentication and role checks for the members domain."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.members import repository
from api.members.crypto import hash_token
from api.members.errors import InvalidToken, RoleRequired
from api.members.models import ApiToken, Member

# Tokens are token_urlsafe(32): 43 characters; anything far longer is not ours (and not hashed).
MAX_TOKEN_CHARS = 256


def authenticate(session: Session, token: str | None) -> tuple[Member, ApiToken]:
    """The member owning an active token, and the token; InvalidToken otherwise."""
    if not token:
        msg = "a bearer token is required (Authorization: Bearer <token>)"
        raise InvalidToken(msg)
    if len(token) > MAX_TOKEN_CHARS:
        msg = "the bearer token is not valid"
        raise InvalidToken(msg)
    found = repository.active_token(session, hash_token(token))
    if found is None:
        msg = "the bearer token is unknown or revoked"
        raise InvalidToken(msg)
    token_row, member = found
    return member, token_row


def is_coordinator(member: Member) -> bool:
    """Whether the member holds the coordinator role."""
    return member.has_role("coordinator")


def check_role(member: Member, role: str) -> Member:
    """The member, if it holds ``role``; RoleRequired otherwise."""
    if not member.has_role(role):
        msg = f"this needs the {role} role"
        raise RoleRequired(msg)
    return member
