"""DriverStatement: Core statements compiled once and run on the session's psycopg connection."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from api.database import DriverStatement
from api.members.models import Member
from tests.api.conftest import MakeMember

_HANDLES = select(Member.id, Member.handle).where(Member.id == bindparam("member_id"))
_RENAME = update(Member).where(Member.id == bindparam("member_id")).values(handle=bindparam("new"))


def test_rows_match_what_sqlalchemy_returns(db: Session, make_member: MakeMember) -> None:
    member, _ = make_member()
    got = DriverStatement.of(_HANDLES).rows(db, {"member_id": member.id})
    assert got == [tuple(row) for row in db.execute(_HANDLES, {"member_id": member.id})]
    assert got == [(member.id, member.handle)]
    assert DriverStatement.of(_HANDLES).rows(db, {"member_id": uuid.uuid4()}) == []


def test_statements_join_the_session_s_transaction(db: Session, make_member: MakeMember) -> None:
    member, _ = make_member()
    changed = DriverStatement.of(_RENAME).rowcount(db, {"member_id": member.id, "new": "renamed"})
    assert changed == 1
    # The ORM sees the change inside the same transaction; rolling back undoes it.
    assert db.scalar(select(Member.handle).where(Member.id == member.id)) == "renamed"
    db.rollback()
    assert db.scalar(select(func.count()).where(Member.handle == "renamed")) == 0


def test_literal_values_become_defaults() -> None:
    statement = DriverStatement.of(select(Member.id).where(Member.handle == "fixed").limit(3))
    assert sorted(statement.defaults.values(), key=str) == [3, "fixed"]


def test_an_expanding_in_is_refused() -> None:
    with pytest.raises(ValueError, match="expanding IN"):
        DriverStatement.of(select(Member.id).where(Member.handle.in_(["a", "b"])))
