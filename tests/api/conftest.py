"""API fixtures: members with tokens, made through the members service, for every domain."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.members import service
from api.members.models import Member
from api.members.schemas import MemberCreate
from api.settings import Settings
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, member_body, square, unique_handle

MakeMember = Callable[..., tuple[Member, str]]


@pytest.fixture
def make_member(db: Session, settings: Settings, graphs: GraphStore) -> MakeMember:
    """Factory: make_member(roles=("responder",), handle=None, **body fields) -> (Member, token).

    Members are created through the members service (same validation as the API), committed
    into the test's rolled-back transaction, so the ``client`` sees them.
    """

    def make(
        roles: Iterable[str] = ("responder",),
        handle: str | None = None,
        **fields: Any,
    ) -> tuple[Member, str]:
        roles = list(roles)
        if "home_zone" not in fields and not (set(roles) & {"responder", "defense"}):
            fields.setdefault("home_zone", square(HELSINKI_LON, HELSINKI_LAT, 300.0))
        body = member_body(handle, roles=roles, **fields)
        if body.get("home_zone") is None:
            body.pop("home_zone")
        member, token = service.create_member(
            db, settings, MemberCreate.model_validate(body), actor=None, graphs=graphs
        )
        db.commit()
        return member, token

    return make


@pytest.fixture
def coordinator(make_member: MakeMember) -> tuple[Member, str]:
    """A coordinator (with a home zone) and its token."""
    return make_member(roles=("coordinator",), handle=unique_handle("coord"))


@pytest.fixture
def responder(make_member: MakeMember) -> tuple[Member, str]:
    """A responder and its token."""
    return make_member(roles=("responder",), handle=unique_handle("resp"))


@pytest.fixture
def other_member(make_member: MakeMember) -> tuple[Member, str]:
    """Another responder: someone whose data the first must not see."""
    return make_member(roles=("responder",), handle=unique_handle("other"))
