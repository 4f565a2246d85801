"""Erasure and purge of buddy-group data: memberships, contacts, proposals, texts, outbox rows."""

# ruff: noqa: F811  (pytest fixtures imported from other test modules, used as arguments)
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from api.alerts.escalation import purge_expired
from api.cli.purge import run_purge
from api.groups.erasure import scrub
from api.groups.models import BuddyGroupMember, GroupMessage, GroupProposal
from tests.api.conftest import coordinator, make_member  # noqa: F401  (fixtures)
from tests.api.factories import auth
from tests.groups.fixtures_texts import (  # noqa: F401  (fixtures)
    START,
    api,
    clock,
    make_group,
    send_text,
    text_deliveries,
)

HOOK = {"webhook_url": "http://127.0.0.1:9/hook"}


def proposal(
    db: Any,
    answer: dict[str, Any],
    *,
    params: dict[str, Any],
    published: bool = False,
    created_at=START,
) -> GroupProposal:  # type: ignore[no-untyped-def]
    row = GroupProposal(
        mode="walk",
        params=params,
        answer=answer,
        created_at=created_at,
        published_at=created_at if published else None,
    )
    db.add(row)
    db.commit()
    return row


def fresh(db: Any, row: Any) -> Any:
    db.expire_all()
    return db.get(type(row), row.id)


class TestErasure:
    def test_erasure_removes_memberships_and_the_point_contact_and_keeps_text_counts(
        self, api, db, make_member, make_group, coordinator
    ):
        (gone, gone_token), (stays, _) = (
            make_member(roles=(), contact=HOOK),
            make_member(roles=(), contact=HOOK),
        )
        contact, contact_token = make_member(roles=("defense",), contact=HOOK)
        group = make_group([gone, stays], point_contact=contact)
        elsewhere = make_group([gone], point_contact=contact, retired=True)
        sent = send_text(api, contact_token, group.id, "see you", key="x")
        assert sent.status_code == 201 and sent.json()["sent_count"] == 2

        assert api.delete("/v1/members/me", headers=auth(gone_token)).status_code == 204
        members = db.scalars(select(BuddyGroupMember.member_id)).all()
        assert gone.id not in members and stays.id in members
        assert (
            db.scalar(
                select(func.count())
                .select_from(BuddyGroupMember)
                .where(BuddyGroupMember.group_id == elsewhere.id)
            )
            == 0
        )
        assert gone.id not in {d.member_id for d in text_deliveries(db, sent.json()["id"])}

        assert api.delete("/v1/members/me", headers=auth(contact_token)).status_code == 204
        assert fresh(db, group).point_contact_id is None
        message = db.get(GroupMessage, uuid.UUID(sent.json()["id"]))
        db.refresh(message)
        assert message.sender_id is None and message.sent_count == 2
        # The group goes on: a coordinator can still text it.
        _, coord_token = coordinator
        again = send_text(api, coord_token, group.id, "new contact soon", key="y")
        assert again.status_code == 201 and again.json()["sent_count"] == 1

    def test_erasure_scrubs_the_member_from_every_proposal(self, api, db, make_member, coordinator):
        (gone, gone_token), (a, _), (b, _) = (make_member(roles=()) for _ in range(3))
        contact, _ = make_member(roles=("defense",))
        g, x, y, c = (str(m.id) for m in (gone, a, b, contact))
        gone_handle, a_handle = gone.handle, a.handle
        answer = {
            "groups": [
                {"members": [g, x], "point_contact": c, "shared_minutes": 12.0},
                {"members": [y], "point_contact": g, "shared_minutes": 0.0},
            ],
            "unplaced": [g],
            "members": [{"id": g, "handle": gone_handle}, {"id": x, "handle": a_handle}],
            "contact_eta_s": {g: 120.0, c: 300.0},
            "quality": {"placed_share": 0.75},
        }
        open_one = proposal(db, answer, params={"max_size": 10, "keep": [[g, x]]})
        published = proposal(db, answer, params={"max_size": 10}, published=True)
        untouched = proposal(db, {"groups": [{"members": [x, y], "point_contact": c}]}, params={})

        _, coord_token = coordinator
        assert api.delete(f"/v1/members/{gone.id}", headers=auth(coord_token)).status_code == 204
        for row in (open_one, published):
            doc = fresh(db, row).answer
            assert g not in str(doc) and gone_handle not in str(doc)
            assert doc["groups"] == [
                {"members": [x], "point_contact": c, "shared_minutes": 12.0},
                {"members": [y], "point_contact": None, "shared_minutes": 0.0},
            ]
            assert doc["unplaced"] == []
            assert doc["members"] == [{"id": x, "handle": a_handle}]
            assert doc["contact_eta_s"] == {c: 300.0}
            assert doc["quality"] == {"placed_share": 0.75}
        assert fresh(db, open_one).params == {"max_size": 10, "keep": [[x]]}
        assert fresh(db, untouched).answer == {"groups": [{"members": [x, y], "point_contact": c}]}
        assert gone_token  # (its tokens went with it)
        assert api.get("/v1/members/me", headers=auth(gone_token)).status_code == 401


class TestPurge:
    def test_old_texts_go_with_their_outbox_rows_and_old_unpublished_proposals_too(
        self, api, db, make_member, make_group, coordinator, settings, clock
    ):
        members = [make_member(roles=(), contact=HOOK)[0] for _ in range(2)]
        group = make_group(members)
        _, token = coordinator
        old = send_text(api, token, group.id, "old news", key="old").json()
        clock.advance(2 * 86400)
        new = send_text(api, token, group.id, "news", key="new").json()
        stale = proposal(db, {"groups": []}, params={}).id
        kept = proposal(db, {"groups": []}, params={}, published=True).id
        later = START + timedelta(days=settings.group_retention_days + 1)
        fresh_one = proposal(db, {"groups": []}, params={}, created_at=later).id
        month = f"{START:%Y-%m}"

        dry = run_purge(db, settings, now=later, dry_run=True)
        assert "would remove: 1 group texts, 1 unpublished group proposals" in dry
        assert f"would remove: {month} group_message text: 1" in dry
        assert f"would remove: {month} group_notification webhook: 2" in dry
        assert f"would remove: {month} group_proposal unpublished: 1" in dry
        assert len(text_deliveries(db, old["id"])) == 2
        assert db.get(GroupProposal, stale) is not None

        done = run_purge(db, settings, now=later, dry_run=False)
        assert "removed: 1 group texts, 1 unpublished group proposals" in done
        assert f"purged so far: {month} group_message text: 1" in done
        assert f"purged so far: {month} group_notification webhook: 2" in done
        db.expire_all()
        assert text_deliveries(db, old["id"]) == []
        assert db.get(GroupMessage, uuid.UUID(old["id"])) is None
        assert len(text_deliveries(db, new["id"])) == 2
        assert db.get(GroupMessage, uuid.UUID(new["id"])) is not None
        assert db.get(GroupProposal, stale) is None
        assert db.get(GroupProposal, kept) is not None
        assert db.get(GroupProposal, fresh_one) is not None
        again = run_purge(db, settings, now=later, dry_run=False)
        assert "removed: 0 group texts, 0 unpublished group proposals" in again

    def test_the_group_retention_is_its_own_setting(
        self, api, db, make_member, make_group, coordinator, settings, clock
    ):
        group = make_group([make_member(roles=(), contact=HOOK)[0]])
        _, token = coordinator
        sent = send_text(api, token, group.id, "soon gone", key="s").json()
        short = settings.model_copy(update={"group_message_retention_days": 1.0})
        assert short.group_retention_days == 1.0 < settings.group_retention_days
        assert settings.group_retention_days == settings.alert_retention_days
        now = START + timedelta(hours=23)
        assert purge_expired(db, short, now=now).group_messages == 0
        purged = purge_expired(db, short, now=now + timedelta(hours=2))
        assert (purged.group_messages, purged.alerts) == (1, 0)
        assert text_deliveries(db, sent["id"]) == []


def test_an_object_naming_the_member_goes_whole_wherever_it_sits() -> None:
    # G1's published groups name members as {id, handle} objects, the point contact as a
    # field's value: the handle must go with the id, not stay behind a null id.
    g, x = str(uuid.uuid4()), str(uuid.uuid4())
    doc = {
        "groups": [
            {
                "members": [{"id": g, "handle": "gone"}, {"id": x, "handle": "stays"}],
                "point_contact": {"id": g, "handle": "gone"},
            },
            {
                "members": [{"id": x, "handle": "stays"}],
                "point_contact": {"id": x, "handle": "stays"},
            },
        ],
        "unmatched": {"route": {"member_id": g, "reason": "no graph near", "handle": "gone"}},
    }
    scrubbed = scrub(doc, g)
    assert g not in str(scrubbed) and "gone" not in str(scrubbed)
    assert scrubbed == {
        "groups": [
            {"members": [{"id": x, "handle": "stays"}], "point_contact": None},
            {
                "members": [{"id": x, "handle": "stays"}],
                "point_contact": {"id": x, "handle": "stays"},
            },
        ],
        "unmatched": {"route": None},
    }
