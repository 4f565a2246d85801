"""Fixtures of group texts, buddies first and group erasure: published groups made directly.

Imported explicitly by those test modules (tests/groups/conftest.py belongs to the groups
API's own tests). A group is published by inserting BuddyGroup + BuddyGroupMember rows, as
the publish route would.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.clock import ManualClock
from api.groups.models import BuddyGroup, BuddyGroupMember
from api.members.models import Member
from api.notify.models import Delivery
from tests.api.factories import auth

# Tuesday 12:00 in Helsinki (the test settings' time zone).
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

MakeGroup = Callable[..., BuddyGroup]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def api(settings, graphs, engine, session_factory, clock) -> TestClient:  # type: ignore[no-untyped-def]
    """A client of an app on the test's transaction whose clock moves only when told."""
    from api.main import create_app

    app = create_app(
        settings, engine=engine, session_factory=session_factory, graphs=graphs, clock=clock
    )
    return TestClient(app, raise_server_exceptions=False)


def publish_group(
    db: Session,
    members: Iterable[Member],
    *,
    point_contact: Member | None = None,
    retired: bool = False,
    published_at: datetime = START - timedelta(days=1),
) -> BuddyGroup:
    """A published group of ``members`` (current unless ``retired``), committed."""
    group = BuddyGroup(
        position=0,
        mode="walk",
        point_contact_id=point_contact.id if point_contact else None,
        shared_minutes=0.0,
        published_at=published_at,
        retired_at=published_at + timedelta(hours=1) if retired else None,
    )
    db.add(group)
    db.flush()
    db.add_all(BuddyGroupMember(group_id=group.id, member_id=m.id) for m in members)
    db.commit()
    return group


@pytest.fixture
def make_group(db: Session) -> MakeGroup:
    """make_group(members, point_contact=None, retired=False) -> BuddyGroup."""

    def make(members: Iterable[Member], **options: Any) -> BuddyGroup:
        return publish_group(db, members, **options)

    return make


def send_text(
    client: TestClient, token: str, group_id: Any, text: str = "meet at 6", *, key: str | None
) -> Any:
    headers = auth(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(f"/v1/groups/{group_id}/messages", json={"text": text}, headers=headers)


def text_deliveries(db: Session, message_id: Any) -> list[Delivery]:
    stmt = (
        select(Delivery)
        .where(Delivery.alert_id == uuid.UUID(str(message_id)))
        .order_by(Delivery.id)
        .execution_options(populate_existing=True)
    )
    return list(db.scalars(stmt))
