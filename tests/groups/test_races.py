"""Publishes and moves at once, on committed data: one set of current groups, never two."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update

from api import database
from api.clock import ManualClock
from api.groups.models import BuddyGroup, BuddyGroupMember, GroupProposal
from api.members import repository as members_repo
from api.members import service as members_service
from api.members.models import Member
from api.members.schemas import MemberCreate
from api.notify.models import Delivery
from tests.alerts.conftest import START
from tests.alerts.helpers import race
from tests.api.factories import auth, member_body, unique_handle
from tests.groups.conftest import HOOK, WEEKDAYS, WEEKEND, Corridor


@pytest.fixture
def arena(database_url: str, settings: Any, graphs: Any, corridor: Corridor) -> Iterator[Any]:
    """A coordinator and ten corridor walkers committed for real; all of it deleted after."""
    from api.main import create_app

    engine = database.make_engine(database_url, pool_size=8)
    factory = database.make_session_factory(engine)
    made: list[tuple[Member, str]] = []
    with database.transaction(factory) as session:
        coordinator = member_body(unique_handle("rc"), roles=["coordinator"])
        made.append(
            members_service.create_member(
                session,
                settings,
                MemberCreate.model_validate(coordinator),
                actor=None,
                graphs=graphs,
            )
        )
        for days in (WEEKDAYS, WEEKEND):
            for i in range(5):
                body = member_body(
                    unique_handle("rw"),
                    lon=float(corridor.lon[i]),
                    lat=float(corridor.lat[i]),
                    side_m=220.0,
                    contact={"webhook_url": HOOK},
                    routes=[
                        {"path": corridor.path(), "days": days, "start": "08:00", "end": "08:30"}
                    ],
                )
                made.append(
                    members_service.create_member(
                        session,
                        settings,
                        MemberCreate.model_validate(body),
                        actor=None,
                        graphs=graphs,
                    )
                )
    app = create_app(
        settings, engine=engine, session_factory=factory, graphs=graphs, clock=ManualClock(START)
    )
    yield {"app": app, "factory": factory, "token": made[0][1], "members": made}
    ids = [m.id for m, _ in made]
    with database.transaction(factory) as session:
        groups = session.scalars(
            select(BuddyGroupMember.group_id).where(BuddyGroupMember.member_id.in_(ids))
        ).all()
        session.execute(delete(Delivery).where(Delivery.member_id.in_(ids)))
        session.execute(delete(BuddyGroup).where(BuddyGroup.id.in_(groups)))
        session.execute(delete(GroupProposal).where(GroupProposal.created_by == made[0][0].id))
        session.execute(delete(Member).where(Member.id.in_(ids)))
    engine.dispose()


def _build(arena: Any) -> str:
    client = TestClient(arena["app"], raise_server_exceptions=False)
    r = client.post("/v1/groups/build", json={}, headers=auth(arena["token"]))
    assert r.status_code == 201, r.text
    proposal_id: str = r.json()["proposal_id"]
    return proposal_id


def _publish(arena: Any, proposal_id: str) -> Any:
    client = TestClient(arena["app"], raise_server_exceptions=False)
    return client.post(f"/v1/groups/proposals/{proposal_id}/publish", headers=auth(arena["token"]))


def _current(arena: Any) -> set[uuid.UUID]:
    with database.transaction(arena["factory"]) as session:
        return set(session.scalars(select(BuddyGroup.id).where(BuddyGroup.retired_at.is_(None))))


@pytest.mark.slow
class TestPublishRaces:
    def test_two_proposals_published_at_once_leave_one_current_set(self, arena: Any) -> None:
        for _ in range(3):
            a, b = _build(arena), _build(arena)
            ra, rb = race(partial(_publish, arena, a), partial(_publish, arena, b))
            assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
            sets = [{uuid.UUID(g["id"]) for g in r.json()["items"]} for r in (ra, rb)]
            assert all(sets)
            # The later publish retired the earlier one: exactly one answer's groups are current.
            assert _current(arena) in sets

    def test_one_proposal_published_twice_at_once_is_one_200_and_one_409(self, arena: Any) -> None:
        proposal_id = _build(arena)
        answers = race(lambda: _publish(arena, proposal_id), lambda: _publish(arena, proposal_id))
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        won = next(r for r in answers if r.status_code == 200)
        assert _current(arena) == {uuid.UUID(g["id"]) for g in won.json()["items"]}
        with database.transaction(arena["factory"]) as session:
            told = session.scalars(
                select(Delivery.member_id).where(
                    Delivery.message_kind == "group",
                    Delivery.alert_id.in_([uuid.UUID(g["id"]) for g in won.json()["items"]]),
                )
            ).all()
        # Each member told once: the loser queued nothing.
        assert len(told) == len(set(told)) == 10

    def test_two_moves_into_the_last_place_at_once_are_one_200_and_one_409(
        self, arena: Any
    ) -> None:
        answer = _publish(arena, _build(arena))
        assert answer.status_code == 200, answer.text
        walker = str(arena["members"][1][0].id)
        target = next(g for g in answer.json()["items"] if walker in str(g["members"]))
        inside = {m["id"] for m in target["members"]}
        outsiders = [str(m.id) for m, _ in arena["members"] if str(m.id) not in inside]
        client = TestClient(arena["app"], raise_server_exceptions=False)

        def move(member_id: str) -> Any:
            return TestClient(arena["app"], raise_server_exceptions=False).post(
                f"/v1/groups/{target['id']}/members",
                json={"member_id": member_id},
                headers=auth(arena["token"]),
            )

        while len(inside) < 9:
            member_id = outsiders.pop()
            assert move(member_id).status_code == 200
            inside.add(member_id)
        answers = race(partial(move, outsiders[0]), partial(move, outsiders[1]))
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        group = client.get(f"/v1/groups/{target['id']}", headers=auth(arena["token"])).json()
        assert len(group["members"]) == 10


def _blocked_by(factory: Any, pid: int, *, timeout_s: float = 20.0) -> None:
    """Wait until some backend waits for a lock that backend ``pid`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with database.transaction(factory) as session:
            waiting = session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": pid},
            )
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("nothing came to wait for the lock")


@pytest.mark.slow
class TestPublishAndErasure:
    def test_a_member_erased_while_a_proposal_naming_it_is_published_is_waited_for(
        self, arena: Any
    ) -> None:
        # An erasure holds the member row first, then scrubs the proposals naming it; a
        # publish that held the proposal while waiting for the member deadlocked with it.
        proposal_id = _build(arena)
        gone = arena["members"][3][0]
        eraser = arena["factory"]()
        answers: list[Any] = []
        try:
            members_repo.lock_member(eraser, gone.id)
            pid = int(eraser.scalar(text("SELECT pg_backend_pid()")) or 0)
            publisher = threading.Thread(
                target=lambda: answers.append(_publish(arena, proposal_id))
            )
            publisher.start()
            _blocked_by(arena["factory"], pid)
            actor = eraser.get(Member, arena["members"][0][0].id)
            member = eraser.get(Member, gone.id)
            assert actor is not None and member is not None
            members_service.delete_member(eraser, member, actor=actor)
            eraser.commit()
        finally:
            eraser.close()
        publisher.join(30)
        assert len(answers) == 1
        assert answers[0].status_code == 200, answers[0].text
        published = {m["id"] for g in answers[0].json()["items"] for m in g["members"]}
        assert published and str(gone.id) not in published

    def _serving(self, arena: Any) -> tuple[dict[str, Any], Member]:
        """A published group whose point contact is made a walker of another group."""
        answer = _publish(arena, _build(arena))
        assert answer.status_code == 200, answer.text
        groups = answer.json()["items"]
        assert len(groups) >= 2
        target = groups[0]
        inside = {m["id"] for m in target["members"]}
        contact = next(m for m, _ in arena["members"][1:] if str(m.id) not in inside)
        with database.transaction(arena["factory"]) as session:
            session.execute(
                update(BuddyGroup)
                .where(BuddyGroup.id == uuid.UUID(target["id"]))
                .values(point_contact_id=contact.id)
            )
        return target, contact

    def _erase_while(self, arena: Any, gone: Member, call: Any) -> Any:
        """Run ``call`` in a thread while ``gone`` is being erased: its answer."""
        eraser = arena["factory"]()
        answers: list[Any] = []
        try:
            members_repo.lock_member(eraser, gone.id)
            pid = int(eraser.scalar(text("SELECT pg_backend_pid()")) or 0)
            thread = threading.Thread(target=lambda: answers.append(call()))
            thread.start()
            _blocked_by(arena["factory"], pid)
            actor = eraser.get(Member, arena["members"][0][0].id)
            member = eraser.get(Member, gone.id)
            assert actor is not None and member is not None
            members_service.delete_member(eraser, member, actor=actor)
            eraser.commit()
        finally:
            eraser.close()
        thread.join(30)
        assert len(answers) == 1
        return answers[0]

    def test_a_point_contact_erased_while_moved_into_its_group_is_waited_for(
        self, arena: Any
    ) -> None:
        target, contact = self._serving(arena)
        client = TestClient(arena["app"], raise_server_exceptions=False)
        answer = self._erase_while(
            arena,
            contact,
            lambda: client.post(
                f"/v1/groups/{target['id']}/members",
                json={"member_id": str(contact.id)},
                headers=auth(arena["token"]),
            ),
        )
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "MemberNotFound"

    def test_a_point_contact_erased_while_its_group_is_texted_is_waited_for(
        self, arena: Any
    ) -> None:
        target, contact = self._serving(arena)
        client = TestClient(arena["app"], raise_server_exceptions=False)
        headers = {**auth(arena["token"]), "Idempotency-Key": uuid.uuid4().hex}
        answer = self._erase_while(
            arena,
            contact,
            lambda: client.post(
                f"/v1/groups/{target['id']}/messages", json={"text": "meet at 6"}, headers=headers
            ),
        )
        assert answer.status_code == 201, answer.text
        # Every walker has a webhook; the contact went, and the sender is not sent its text.
        sender = str(arena["members"][0][0].id)
        assert answer.json()["sent_count"] == len(
            [m for m in target["members"] if m["id"] != sender]
        )
