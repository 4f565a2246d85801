"""Group texts over HTTP: once to each member through the real outbox, idempotent, rate-limited."""

# ruff: noqa: F811  (pytest fixtures imported from other test modules, used as arguments)
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from sqlalchemy import text as text_sql

from api import database
from api.groups.models import BuddyGroup, GroupMessage
from api.groups.texts import GroupTextRead
from api.members import service as members_service
from api.members.models import Member
from api.members.schemas import MemberCreate
from api.notify.models import Delivery
from api.notify.worker import OutboxWorker
from tests.alerts.helpers import race
from tests.api.conftest import coordinator, make_member  # noqa: F401  (fixtures)
from tests.api.factories import member_body, unique_handle
from tests.groups.fixtures_texts import (  # noqa: F401  (fixtures)
    api,
    clock,
    make_group,
    publish_group,
    send_text,
    text_deliveries,
)
from tests.notify.conftest import webhook  # noqa: F401  (fixture: a real local HTTP receiver)


def _messages(db) -> int:  # type: ignore[no-untyped-def]
    return int(db.scalar(select(func.count()).select_from(GroupMessage)) or 0)


class TestDelivery:
    def test_each_member_and_the_contact_get_it_once_and_one_without_a_channel_is_not_counted(
        self,
        api,
        db,
        make_member,
        make_group,
        coordinator,
        webhook,
        session_factory,
        settings,
        clock,
    ):
        reachable = [
            make_member(roles=(), contact={"webhook_url": f"{webhook.url}/hook/{i}"})[0]
            for i in range(3)
        ]
        silent, _ = make_member(roles=())
        contact, _ = make_member(
            roles=("defense",), contact={"webhook_url": f"{webhook.url}/hook/contact"}
        )
        group = make_group([*reachable, silent], point_contact=contact)
        coord, coord_token = coordinator
        res = send_text(api, coord_token, group.id, "Meeting at the library, 18:00", key="t1")
        assert res.status_code == 201, res.text
        read = GroupTextRead.model_validate(res.json())
        assert set(res.json()) == {"id", "sent_count", "created_at"}
        assert read.sent_count == 4
        with OutboxWorker(session_factory, settings, clock=clock, listen=False) as outbox:
            outbox.run_once()
            outbox.run_once()
            paths = sorted(r.path for r in webhook.requests)
            assert paths == ["/hook/0", "/hook/1", "/hook/2", "/hook/contact"]
            assert len(set(webhook.ids())) == 4
            for request in webhook.requests:
                doc = request.json()
                assert doc["kind"] == "group_message"
                data = doc["data"]["group_message"]
                assert data == {
                    "message_id": str(read.id),
                    "group_id": str(group.id),
                    "sender_handle": coord.handle,
                    "text": "Meeting at the library, 18:00",
                }
                assert "coordinates" not in request.body.decode()
            assert {d.state for d in text_deliveries(db, read.id)} == {"sent"}
            assert silent.id not in {d.member_id for d in text_deliveries(db, read.id)}

            again = send_text(api, coord_token, group.id, "Meeting at the library, 18:00", key="t1")
            assert again.status_code == 200
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.json() == res.json()
            outbox.run_once()
            assert len(webhook.requests) == 4
        assert len(text_deliveries(db, read.id)) == 4
        assert _messages(db) == 1

    def test_the_sender_is_not_sent_its_own_text(
        self,
        api,
        db,
        make_member,
        make_group,
    ):
        members = [
            make_member(roles=(), contact={"webhook_url": "http://127.0.0.1:9/h"}) for _ in range(2)
        ]
        contact, contact_token = make_member(
            roles=("defense",), contact={"webhook_url": "http://127.0.0.1:9/c"}
        )
        group = make_group([m for m, _ in members], point_contact=contact)
        res = send_text(api, contact_token, group.id, key="c1")
        assert res.status_code == 201, res.text
        assert res.json()["sent_count"] == 2
        got = {d.member_id for d in text_deliveries(db, res.json()["id"])}
        assert got == {m.id for m, _ in members}


class TestIdempotencyAndRate:
    def test_same_key_with_another_text_is_422_and_sends_nothing(
        self,
        api,
        db,
        make_member,
        make_group,
        coordinator,
    ):
        member, _ = make_member(roles=(), contact={"webhook_url": "http://127.0.0.1:9/h"})
        group = make_group([member])
        _, token = coordinator
        first = send_text(api, token, group.id, "one", key="k")
        assert first.status_code == 201
        other = send_text(api, token, group.id, "two", key="k")
        assert other.status_code == 422
        assert other.json()["error"] == "GroupTextKeyReused"
        assert len(text_deliveries(db, first.json()["id"])) == 1
        assert _messages(db) == 1

    def test_the_rate_limit_answers_429_with_retry_after_per_group(
        self,
        api,
        db,
        make_member,
        make_group,
        coordinator,
        settings,
        clock,
    ):
        member, _ = make_member(roles=(), contact={"webhook_url": "http://127.0.0.1:9/h"})
        group = make_group([member])
        elsewhere = make_group([make_member(roles=())[0]])
        _, token = coordinator
        rate = settings.group_message_rate
        for i in range(rate):
            assert send_text(api, token, group.id, f"text {i}", key=f"k{i}").status_code == 201
            clock.advance(60)
        before = _messages(db)
        over = send_text(api, token, group.id, "one too many", key="over")
        assert over.status_code == 429
        assert over.json()["error"] == "GroupTextRateLimited"
        # The first text leaves the hour `rate` minutes after it was sent.
        assert int(over.headers["Retry-After"]) == 3600 - rate * 60
        assert _messages(db) == before
        # A retry of a text already sent is still answered; another group is not limited.
        assert send_text(api, token, group.id, "text 0", key="k0").status_code == 200
        assert send_text(api, token, elsewhere.id, "hello", key="e").status_code == 201
        clock.advance(int(over.headers["Retry-After"]))
        assert send_text(api, token, group.id, "one too many", key="over").status_code == 201


class TestWhoMaySend:
    def test_coordinators_and_the_point_contact_may_everyone_else_gets_404(
        self,
        api,
        db,
        make_member,
        make_group,
        coordinator,
    ):
        (plain, plain_token), (buddy, _) = make_member(roles=()), make_member(roles=())
        contact, contact_token = make_member(roles=("defense",), handle=unique_handle("pc"))
        group = make_group([plain, buddy], point_contact=contact)
        (stranger, stranger_token) = make_member(roles=())
        other_contact, other_contact_token = make_member(roles=("defense",))
        make_group([stranger], point_contact=other_contact)
        _, coord_token = coordinator

        assert send_text(api, contact_token, group.id, key="a").status_code == 201
        assert send_text(api, coord_token, group.id, key="b").status_code == 201
        for token in (plain_token, stranger_token, other_contact_token):
            res = send_text(api, token, group.id, key="c")
            assert res.status_code == 404, res.text
            assert res.json()["error"] == "GroupNotFound"
        unknown = send_text(api, coord_token, uuid.uuid4(), key="d")
        assert unknown.status_code == 404
        # The same answer whether the group exists or not.
        assert send_text(api, plain_token, uuid.uuid4(), key="c").json()["error"] == "GroupNotFound"
        assert api.post(f"/v1/groups/{group.id}/messages", json={"text": "x"}).status_code == 401

    def test_a_retired_group_is_404_even_for_its_point_contact(
        self,
        api,
        make_member,
        make_group,
        coordinator,
    ):
        member, _ = make_member(roles=())
        contact, contact_token = make_member(roles=("defense",))
        old = make_group([member], point_contact=contact, retired=True)
        _, coord_token = coordinator
        assert send_text(api, coord_token, old.id, key="r").status_code == 404
        assert send_text(api, contact_token, old.id, key="r").status_code == 404

    def test_bad_input_is_422_and_writes_nothing(
        self,
        api,
        db,
        make_member,
        make_group,
        coordinator,
    ):
        member, _ = make_member(roles=())
        group = make_group([member])
        _, token = coordinator
        headers = {"Authorization": f"Bearer {token}"}
        url = f"/v1/groups/{group.id}/messages"
        assert api.post(url, json={"text": "no key"}, headers=headers).status_code == 422
        for bad in ({"text": ""}, {"text": "x" * 501}, {"text": 5}, {"text": "a", "to": "b"}, {}):
            res = api.post(url, json=bad, headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
            assert res.status_code == 422, bad
            assert res.json()["error"] == "ValidationError"
        res = api.post(
            "/v1/groups/not-a-uuid/messages",
            json={"text": "a"},
            headers={**headers, "Idempotency-Key": "z"},
        )
        assert res.status_code == 422
        assert _messages(db) == 0


@pytest.fixture
def arena(engine, settings, graphs, clock) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Committed data (racers use their own connections): a coordinator and a group of 3."""
    from api.main import create_app

    factory = database.make_session_factory(engine)
    made: list[Member] = []
    tokens: list[str] = []
    with database.transaction(factory) as session:
        for roles in (["coordinator"], [], [], []):
            data = member_body(
                unique_handle("gt"), roles=roles, contact={"webhook_url": "http://127.0.0.1:9/h"}
            )
            member, token = members_service.create_member(
                session, settings, MemberCreate.model_validate(data), actor=None, graphs=graphs
            )
            made.append(member)
            tokens.append(token)
    with database.transaction(factory) as session:
        group = publish_group(session, made[1:])
    app = create_app(settings, engine=engine, session_factory=factory, graphs=graphs, clock=clock)
    yield {"app": app, "token": tokens[0], "group": group, "factory": factory, "members": made}
    with database.transaction(factory) as session:
        ids = session.scalars(select(GroupMessage.id).where(GroupMessage.group_id == group.id))
        session.execute(delete(Delivery).where(Delivery.alert_id.in_(list(ids))))
        session.execute(delete(BuddyGroup).where(BuddyGroup.id == group.id))
        session.execute(delete(Member).where(Member.id.in_([m.id for m in made])))


class TestRaces:
    def test_the_same_text_sent_at_once_is_sent_once(self, arena, settings):
        def call() -> Any:
            with TestClient(arena["app"], raise_server_exceptions=False) as client:
                return send_text(client, arena["token"], arena["group"].id, "at once", key="same")

        answers = race(*[call] * 6)
        assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
        assert len({a.json()["id"] for a in answers}) == 1
        with arena["factory"]() as session:
            rows = session.scalars(
                select(Delivery).where(Delivery.alert_id == uuid.UUID(answers[0].json()["id"]))
            ).all()
        assert len(rows) == 3 == answers[0].json()["sent_count"]

    def test_the_rate_holds_for_texts_sent_at_once(self, arena, settings):
        def call(i: int) -> Any:
            with TestClient(arena["app"], raise_server_exceptions=False) as client:
                return send_text(client, arena["token"], arena["group"].id, f"t{i}", key=f"k{i}")

        n = settings.group_message_rate + 3
        answers = race(*(partial(call, i) for i in range(n)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [201] * settings.group_message_rate + [429] * 3
        with arena["factory"]() as session:
            sent = session.scalar(
                select(func.count())
                .select_from(GroupMessage)
                .where(GroupMessage.group_id == arena["group"].id)
            )
        assert sent == settings.group_message_rate

    def test_a_text_and_the_erasure_of_the_point_contact_at_once_both_succeed(
        self, arena, settings, graphs
    ):
        # Erasure locks the member row, then its deletion sets the group's point_contact_id
        # to NULL; a text must not hold the group row against that while it waits for the
        # member row (a deadlock: one of the two failed after deadlock_timeout).
        factory = arena["factory"]
        with database.transaction(factory) as session:
            data = member_body(
                unique_handle("pc"),
                roles=["defense"],
                contact={"webhook_url": "http://127.0.0.1:9/p"},
            )
            contact, _ = members_service.create_member(
                session, settings, MemberCreate.model_validate(data), actor=None, graphs=graphs
            )
            session.get(BuddyGroup, arena["group"].id).point_contact_id = contact.id  # type: ignore[union-attr]
        answers: list[Any] = []

        client = TestClient(arena["app"], raise_server_exceptions=False).__enter__()

        def text() -> None:
            answers.append(send_text(client, arena["token"], arena["group"].id, key="pc"))

        erasure = factory()
        try:
            members_service.repository.lock_member(erasure, contact.id)  # erasure's first step
            sender = threading.Thread(target=text)
            sender.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the text waits for the member row
                erasure.execute(text_sql("SELECT pg_stat_clear_snapshot()"))  # else cached
                waiting = erasure.scalar(
                    text_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                )
                if waiting:
                    break
                time.sleep(0.05)
            assert waiting, "the text never waited for the member being erased"
            member = erasure.get(Member, contact.id)
            assert member is not None
            members_service.delete_member(erasure, member, actor=member)
            erasure.commit()
        finally:
            erasure.close()
            sender.join(timeout=30)
            client.__exit__(None, None, None)
        assert answers and answers[0].status_code == 201, answers[0].text
        assert answers[0].json()["sent_count"] == 3  # the three members; the erased contact not
        with factory() as session:
            assert session.get(Member, contact.id) is None
            assert session.get(BuddyGroup, arena["group"].id).point_contact_id is None  # type: ignore[union-attr]

    def test_a_sender_erased_while_its_text_waits_gets_401_not_500(self, arena, settings):
        factory = arena["factory"]
        coordinator = arena["members"][0]
        client = TestClient(arena["app"], raise_server_exceptions=False).__enter__()
        answers: list[Any] = []
        sender = threading.Thread(
            target=lambda: answers.append(
                send_text(client, arena["token"], arena["group"].id, key="gone")
            )
        )
        erasure = factory()
        try:
            members_service.repository.lock_member(erasure, coordinator.id)
            sender.start()
            assert _waits_for_a_lock(erasure), "the text never waited for the member being erased"
            member = erasure.get(Member, coordinator.id)
            assert member is not None
            members_service.delete_member(erasure, member, actor=member)
            erasure.commit()
        finally:
            erasure.close()
            sender.join(timeout=30)
            client.__exit__(None, None, None)
        assert answers and answers[0].status_code == 401, answers[0].text
        with factory() as session:
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(GroupMessage)
                    .where(GroupMessage.group_id == arena["group"].id)
                )
                == 0
            )


def _waits_for_a_lock(session: Any) -> bool:
    """Whether another backend of the test database waits for a lock within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        session.execute(text_sql("SELECT pg_stat_clear_snapshot()"))  # else cached in the txn
        waiting = session.scalar(
            text_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        )
        if waiting:
            return True
        time.sleep(0.05)
    return False


def test_publishing_a_proposal_while_one_of_its_members_is_erased_both_succeed(arena, settings):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from api.groups.models import GroupProposal

    factory = arena["factory"]
    _, a, b, c = arena["members"]
    now = datetime.now(UTC)
    answer = {
        "proposal_id": str(uuid.uuid4()),
        "groups": [
            {
                "members": [str(a.id), str(b.id), str(c.id)],
                "point_contact": None,
                "shared_minutes": 10.0,
            }
        ],
        "unplaced": [],
        "quality": {
            "mean_shared_minutes": 10.0,
            "random_baseline": 1.0,
            "locality_baseline": 2.0,
            "placed_share": 1.0,
            "size_histogram": {"3": 1},
        },
        "mode": "walk",
        "max_size": 10,
        "min_size": 3,
        "keep": False,
        "contact_eta_s": [None],
        "no_contact": [0],
        "unmatched": [],
        "timings_s": {},
        "created_at": now.isoformat(),
    }
    with database.transaction(factory) as session:
        proposal = GroupProposal(mode="walk", params={}, answer=answer, created_at=now)
        session.add(proposal)
        session.flush()
        proposal_id = proposal.id
    client = TestClient(arena["app"], raise_server_exceptions=False).__enter__()
    answers: list[Any] = []
    url = f"/v1/groups/proposals/{proposal_id}/publish"
    publisher = threading.Thread(
        target=lambda: answers.append(
            client.post(url, headers={"Authorization": f"Bearer {arena['token']}"})
        )
    )
    erasure = factory()
    erased_ok = False
    try:
        members_service.repository.lock_member(erasure, c.id)
        publisher.start()
        assert _waits_for_a_lock(erasure), "the publish never waited for the member being erased"
        member = erasure.get(Member, c.id)
        assert member is not None
        members_service.delete_member(erasure, member, actor=member)
        erasure.commit()
        erased_ok = True
    except Exception:  # the deadlock victim: reported below
        erasure.rollback()
    finally:
        erasure.close()
        publisher.join(timeout=30)
        client.__exit__(None, None, None)
        with database.transaction(factory) as session:
            session.execute(delete(BuddyGroup).where(BuddyGroup.proposal_id == proposal_id))
            session.execute(delete(GroupProposal).where(GroupProposal.id == proposal_id))
    assert erased_ok
    assert answers and answers[0].status_code == 200, answers[0].text
