"""Request dependencies: the transaction-owning session, settings, graphs (auth lives in members)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.clock import Clock
from api.graphs import GraphStore
from api.settings import Settings


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed before the response is sent, rolled back on error."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_graphs(request: Request) -> GraphStore:
    """The loaded street graphs."""
    store: GraphStore = request.app.state.graphs
    return store


def get_clock(request: Request) -> Clock:
    """The app's clock (a manual one in tests)."""
    clock: Clock = request.app.state.clock
    return clock


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens before the answer leaves, so a 201 means it is stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
GraphDep = Annotated[GraphStore, Depends(get_graphs)]
ClockDep = Annotated[Clock, Depends(get_clock)]
