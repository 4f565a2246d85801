"""Bearer-token authentication and role checks for the members domain."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from api.members import repository
from api.members.crypto import hash_token
from api.members.errors import InvalidToken, RoleRequired
from api.members.models import ApiToken, Member

# Tokens are token_urlsafe(32): 43 characters; anything far longer is not ours (and not hashed).
MAX_TOKEN_CHARS = 256


class HasRoles(Protocol):
    """A member or a caller: anything that answers role questions."""

    def has_role(self, role: str) -> bool: ...


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, without loading the member's record (hot paths)."""

    id: uuid.UUID
    handle: str
    roles: tuple[str, ...]
    token_id: uuid.UUID

    def has_role(self, role: str) -> bool:
        """Whether the caller holds ``role``."""
        return role in self.roles


def checked_token(token: str | None) -> str:
    """The token if it could be one of ours (present, not overlong); InvalidToken otherwise."""
    if not token:
        msg = "a bearer token is required (Authorization: Bearer <token>)"
        raise InvalidToken(msg)
    if len(token) > MAX_TOKEN_CHARS:
        msg = "the bearer token is not valid"
        raise InvalidToken(msg)
    return token


def _token_hash(token: str | None) -> bytes:
    return hash_token(checked_token(token))


def _unknown() -> InvalidToken:
    return InvalidToken("the bearer token is unknown or revoked")


def authenticate(session: Session, token: str | None) -> tuple[Member, ApiToken]:
    """The member owning an active token, and the token; InvalidToken otherwise."""
    found = repository.active_token(session, _token_hash(token))
    if found is None:
        raise _unknown()
    token_row, member = found
    return member, token_row


def authenticate_caller(session: Session, token: str | None) -> Caller:
    """authenticate() reading only the caller's id, handle and roles (one Core query)."""
    found = repository.active_caller(session, _token_hash(token))
    if found is None:
        raise _unknown()
    token_id, member_id, handle, roles = found
    return Caller(id=member_id, handle=handle, roles=tuple(roles), token_id=token_id)


def is_coordinator(member: HasRoles) -> bool:
    """Whether the member holds the coordinator role."""
    return member.has_role("coordinator")


def check_role(member: Member, role: str) -> Member:
    """The member, if it holds ``role``; RoleRequired otherwise."""
    if not member.has_role(role):
        msg = f"this needs the {role} role"
        raise RoleRequired(msg)
    return member
