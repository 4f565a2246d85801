"""Request dependencies: session (owns the transaction), settings, clock, caller, roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.clock import Clock
from api.database import transaction
from api.graphs import GraphStore
from api.members.auth import (
    Caller,
    authenticate,
    authenticate_caller,
    check_role,
    checked_token,
    is_coordinator,
)
from api.members.models import Member
from api.settings import Settings

# Dependencies that only read app state are `async def`: FastAPI runs a plain `def` in its
# thread pool, and each such hop cost more than the work (several per request).


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed before the response is sent, rolled back on error.

    database.transaction() as for workers and the CLI, entered here (making a session does no
    I/O: it connects on first use) and left in a thread (commit or rollback, then close).
    """
    unit = transaction(request.app.state.session_factory)
    session = unit.__enter__()
    try:
        yield session
    except BaseException as exc:
        await to_thread.run_sync(unit.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await to_thread.run_sync(unit.__exit__, None, None, None)


async def get_clock(request: Request) -> Clock:
    """The app's clock (a manual one in tests)."""
    clock: Clock = request.app.state.clock
    return clock


async def get_graphs(request: Request) -> GraphStore:
    """The app's loaded street graphs (empty: straight-line ranking only)."""
    graphs: GraphStore = request.app.state.graphs
    return graphs


SettingsDep = Annotated[Settings, Depends(get_settings)]
GraphsDep = Annotated[GraphStore, Depends(get_graphs)]
# scope="function": the commit happens before the answer leaves, so a 201 means it is stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ClockDep = Annotated[Clock, Depends(get_clock)]


# --- authentication and roles (members domain) ------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="an ern API token")


def current_member(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Member:
    """The caller, from its bearer token; 401 on a missing, bad or revoked token."""
    member, token = authenticate(session, credentials.credentials if credentials else None)
    # Kept so that "revoke my token" revokes the one this request came with.
    request.state.api_token_id = token.id
    return member


CurrentMember = Annotated[Member, Depends(current_member)]


def current_caller(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """current_member() without loading the member's record: id, handle and roles only."""
    caller = authenticate_caller(session, credentials.credentials if credentials else None)
    request.state.api_token_id = caller.token_id
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token, checked for presence and length only (401 before any body error).

    For handlers that authenticate inside their own unit of work (POST /v1/alerts).
    """
    return checked_token(credentials.credentials if credentials else None)


BearerToken = Annotated[str, Depends(bearer_token)]


def require_role(role: str) -> Callable[[Member], Coroutine[Any, Any, Member]]:
    """A dependency: the caller, if it holds ``role``; 403 otherwise."""

    async def _require(member: CurrentMember) -> Member:
        return check_role(member, role)

    _require.__name__ = f"require_{role}"
    return _require


Coordinator = Annotated[Member, Depends(require_role("coordinator"))]

__all__ = [
    "BearerToken",
    "ClockDep",
    "Coordinator",
    "CurrentCaller",
    "CurrentMember",
    "SessionDep",
    "SettingsDep",
    "current_member",
    "is_coordinator",
    "require_role",
]
