"""Publishing a proposal: current groups, history, 409 twice, members told through the outbox."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import UTC, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.alerts.escalation import purge_expired
from api.cli.purge import run_purge
from api.groups.models import BuddyGroup, BuddyGroupMember
from api.groups.texts_repository import current_group_of
from api.members import service as members_service
from api.members.models import Member
from api.notify.models import Delivery
from tests.api.factories import auth
from tests.groups.conftest import WEEKDAYS, WEEKEND
from tests.notify.test_notify_batching import Statements

DECIMAL = re.compile(r"\d+\.\d+")


@pytest.fixture
def world(commuter: Any) -> dict[str, list[tuple[Member, str]]]:
    """Weekday-morning and weekend walkers on one corridor, a defence volunteer among each."""
    out: dict[str, list[tuple[Member, str]]] = {"morning": [], "weekend": []}
    for name, days in (("morning", WEEKDAYS), ("weekend", WEEKEND)):
        for i in range(5):
            roles = ("responder", "defense") if i == 0 else ("responder",)
            out[name].append(commuter(days, f"08:{i * 5:02d}", f"08:{30 + i * 5:02d}", roles=roles))
    return out


def build(client: TestClient, token: str, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/groups/build", json=body, headers=auth(token))
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


def publish(client: TestClient, token: str, proposal_id: str) -> dict[str, Any]:
    r = client.post(f"/v1/groups/proposals/{proposal_id}/publish", headers=auth(token))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


class TestPublish:
    def test_groups_become_current_as_proposed(
        self, client: TestClient, db: Session, coordinator: Any, world: Any
    ) -> None:
        token = coordinator[1]
        proposal = build(client, token)
        published = publish(client, token, proposal["proposal_id"])
        proposed = sorted(sorted(g["members"]) for g in proposal["groups"])
        got = sorted(sorted(m["id"] for m in g["members"]) for g in published["items"])
        assert got == proposed
        for group, planned in zip(
            sorted(published["items"], key=lambda g: sorted(m["id"] for m in g["members"])),
            sorted(proposal["groups"], key=lambda g: sorted(g["members"])),
            strict=True,
        ):
            contact = group["point_contact"]
            assert (contact and contact["id"]) == planned["point_contact"]
            assert group["shared_minutes"] == planned["shared_minutes"]
            assert group["mode"] == "walk" and group["retired_at"] is None
        listed = client.get("/v1/groups", headers=auth(token)).json()["items"]
        assert {g["id"] for g in listed} == {g["id"] for g in published["items"]}
        handles = {str(m.id): m.handle for ms in world.values() for m, _ in ms}
        for group in listed:
            for m in group["members"]:
                if m["id"] in handles:
                    assert m["handle"] == handles[m["id"]]
        assert all(g.retired_at is None for g in db.scalars(select(BuddyGroup)).all())

    def test_a_second_publish_retires_the_first_as_history(
        self, client: TestClient, coordinator: Any, world: Any
    ) -> None:
        token = coordinator[1]
        first = publish(client, token, build(client, token)["proposal_id"])
        second = publish(client, token, build(client, token)["proposal_id"])
        current = client.get("/v1/groups", headers=auth(token)).json()["items"]
        assert {g["id"] for g in current} == {g["id"] for g in second["items"]}
        r = client.get("/v1/groups", params={"history": "true"}, headers=auth(token))
        assert r.status_code == 200
        everything = {g["id"]: g for g in r.json()["items"]}
        assert set(everything) == {g["id"] for g in first["items"] + second["items"]}
        for g in first["items"]:
            assert everything[g["id"]]["retired_at"] is not None
            # History keeps who was in it.
            assert everything[g["id"]]["members"] == g["members"]
        for g in second["items"]:
            assert everything[g["id"]]["retired_at"] is None

    def test_publishing_twice_is_409_and_changes_nothing(
        self, client: TestClient, coordinator: Any, world: Any
    ) -> None:
        token = coordinator[1]
        proposal_id = build(client, token)["proposal_id"]
        first = publish(client, token, proposal_id)
        r = client.post(f"/v1/groups/proposals/{proposal_id}/publish", headers=auth(token))
        assert r.status_code == 409, r.text
        current = client.get("/v1/groups", headers=auth(token)).json()["items"]
        assert {g["id"] for g in current} == {g["id"] for g in first["items"]}

    def test_an_unknown_proposal_is_404(self, client: TestClient, coordinator: Any) -> None:
        r = client.post(
            f"/v1/groups/proposals/{uuid.uuid4()}/publish", headers=auth(coordinator[1])
        )
        assert r.status_code == 404
        assert set(r.json()) == {"error", "detail"}

    def test_members_are_told_by_handle_through_the_outbox(
        self, client: TestClient, db: Session, coordinator: Any, world: Any
    ) -> None:
        token = coordinator[1]
        published = publish(client, token, build(client, token)["proposal_id"])
        rows = db.scalars(select(Delivery).where(Delivery.message_kind == "group")).all()
        by_member = {r.member_id: r for r in rows}
        members = [m for g in published["items"] for m in g["members"]]
        # Every commuter has one channel (a webhook): one row each, no more; the coordinator
        # (grouped by its home zone) has none and gets nothing.
        walkers = {str(m.id) for ms in world.values() for m, _ in ms}
        assert len(rows) == len(by_member) == len([m for m in members if m["id"] in walkers])
        assert {str(m) for m in by_member} == walkers & {m["id"] for m in members}
        for group in published["items"]:
            handles = {m["handle"] for m in group["members"]}
            for m in group["members"]:
                if m["id"] not in walkers:
                    continue
                row = by_member[uuid.UUID(m["id"])]
                assert row.alert_id == uuid.UUID(group["id"])
                text = row.payload["text"]
                assert text.startswith("ern: you are now in a group with ")
                others = handles - {m["handle"]}
                assert all(h in text for h in others)
                assert sorted(row.payload["group"]["members"]) == sorted(others)
                contact = group["point_contact"]
                if contact is not None:
                    assert f"your point contact is {contact['handle']}" in text
                # Handles only: no coordinates (nor any decimal number) in what is sent.
                assert not DECIMAL.search(str(row.payload)), row.payload

    def test_point_contacts_are_told_whom_they_serve(
        self, client: TestClient, db: Session, coordinator: Any, world: Any
    ) -> None:
        token = coordinator[1]
        published = publish(client, token, build(client, token)["proposal_id"])
        served = [g for g in published["items"] if g["point_contact"] is not None]
        assert served
        rows = db.scalars(select(Delivery).where(Delivery.message_kind == "group_contact")).all()
        assert sorted(str(r.alert_id) for r in rows) == sorted(g["id"] for g in served)
        for row in rows:
            group = next(g for g in served if g["id"] == str(row.alert_id))
            assert str(row.member_id) == group["point_contact"]["id"]
            assert row.payload["group"]["members"] == [m["handle"] for m in group["members"]]
            assert "point contact of a group with" in row.payload["text"]
            assert not DECIMAL.search(str(row.payload)), row.payload

    def test_members_erased_since_the_build_are_left_out(
        self, client: TestClient, db: Session, coordinator: Any, world: Any
    ) -> None:
        token = coordinator[1]
        proposal = build(client, token)
        gone, _ = world["morning"][1]
        members_service.delete_member(db, db.get(Member, gone.id), actor=coordinator[0])  # type: ignore[arg-type]
        db.commit()
        published = publish(client, token, proposal["proposal_id"])
        ids = {m["id"] for g in published["items"] for m in g["members"]}
        assert str(gone.id) not in ids
        assert ids == {m for g in proposal["groups"] for m in g["members"]} - {str(gone.id)}
        assert (
            db.scalars(select(BuddyGroupMember).where(BuddyGroupMember.member_id == gone.id)).all()
            == []
        )

    def test_members_of_another_mode_since_the_build_are_left_out(
        self, client: TestClient, coordinator: Any, world: Any
    ) -> None:
        token = coordinator[1]
        proposal = build(client, token)
        cyclist, cyclist_token = world["weekend"][2]
        r = client.patch("/v1/members/me", json={"mode": "bike"}, headers=auth(cyclist_token))
        assert r.status_code == 200, r.text
        published = publish(client, token, proposal["proposal_id"])
        ids = {m["id"] for g in published["items"] for m in g["members"]}
        assert str(cyclist.id) not in ids
        assert ids == {m for g in proposal["groups"] for m in g["members"]} - {str(cyclist.id)}

    def test_a_member_who_changed_mode_ends_up_in_one_current_group(
        self, client: TestClient, db: Session, coordinator: Any, world: Any
    ) -> None:
        # Walk groups published, then two walkers of one group switch to bike and a bike
        # proposal with them is published: they leave the walk group (of another mode).
        token = coordinator[1]
        walk = publish(client, token, build(client, token)["proposal_id"])
        tokens = {str(m.id): t for ms in world.values() for m, t in ms}
        defence = {str(ms[0][0].id) for ms in world.values()}
        group = next(
            g
            for g in walk["items"]
            if sum(m["id"] in tokens and m["id"] not in defence for m in g["members"]) >= 2
        )
        stay = [m["id"] for m in group["members"]]
        movers = [m for m in stay if m in tokens and m not in defence][:2]
        for m in movers:
            r = client.patch("/v1/members/me", json={"mode": "bike"}, headers=auth(tokens[m]))
            assert r.status_code == 200, r.text
        proposal = build(client, token, mode="bike", min_size=2)
        bike = publish(client, token, proposal["proposal_id"])
        together = [g for g in bike["items"] if set(movers) <= {m["id"] for m in g["members"]}]
        assert len(together) == 1, bike
        bike_group = together[0]

        current = {
            g.id: g
            for g in db.scalars(
                select(BuddyGroup)
                .where(BuddyGroup.retired_at.is_(None))
                .execution_options(populate_existing=True)
            )
        }
        counts: dict[uuid.UUID, int] = {}
        for row in db.scalars(
            select(BuddyGroupMember).where(BuddyGroupMember.group_id.in_(list(current)))
        ):
            counts[row.member_id] = counts.get(row.member_id, 0) + 1
        assert counts and set(counts.values()) == {1}, counts
        # The walk group stays current, without the two who left it.
        listed = {g["id"]: g for g in client.get("/v1/groups", headers=auth(token)).json()["items"]}
        assert group["id"] in listed and bike_group["id"] in listed
        assert {m["id"] for m in listed[group["id"]]["members"]} == set(stay) - set(movers)
        for m in movers:
            mine = client.get("/v1/groups", headers=auth(tokens[m])).json()["items"]
            assert [g["id"] for g in mine] == [bike_group["id"]]
            old = client.get(f"/v1/groups/{group['id']}", headers=auth(tokens[m]))
            assert old.status_code == 404
            # Buddies first takes its buddies from the bike group only.
            found = current_group_of(db, uuid.UUID(m))
            assert found is not None
            others = {str(o) for o in found[0]}
            assert others == {x["id"] for x in bike_group["members"]} - {m}
        # Those who stayed in the walk group no longer see the movers there.
        stayer = next(m for m in stay if m in tokens and m not in movers)
        mine = client.get("/v1/groups", headers=auth(tokens[stayer])).json()["items"]
        seen = {x["id"] for g in mine for x in g["members"]}
        assert not seen & set(movers)


class TestPublishNoticesRetention:
    def test_publish_notices_go_after_the_group_retention_counted_per_month(
        self, client: TestClient, db: Session, coordinator: Any, world: Any, settings: Any
    ) -> None:
        token = coordinator[1]
        published = publish(client, token, build(client, token)["proposal_id"])

        def notices() -> list[Delivery]:
            stmt = (
                select(Delivery)
                .where(Delivery.message_kind.in_(("group", "group_contact")))
                .execution_options(populate_existing=True)
            )
            return list(db.scalars(stmt))

        rows = notices()
        assert {r.message_kind for r in rows} == {"group", "group_contact"}
        made = max(r.created_at for r in rows)
        month = f"{min(r.created_at for r in rows).astimezone(UTC):%Y-%m}"
        per_channel = Counter(r.channel for r in rows)
        retention = timedelta(days=settings.group_retention_days)
        early = purge_expired(db, settings, now=made + retention - timedelta(minutes=1))
        assert early.group_notices == 0
        assert len(notices()) == len(rows)

        later = made + retention + timedelta(minutes=1)
        dry = run_purge(db, settings, now=later, dry_run=True)
        assert f"would remove: {len(rows)} group notices (who is in a group, on publish)" in dry
        for channel, n in per_channel.items():
            assert f"would remove: {month} group_notice {channel}: {n}" in dry, dry
        assert len(notices()) == len(rows)
        done = run_purge(db, settings, now=later, dry_run=False)
        for channel, n in per_channel.items():
            assert f"purged so far: {month} group_notice {channel}: {n}" in done, done
        assert notices() == []
        # The groups themselves stay: only what was sent about them goes.
        current = client.get("/v1/groups", headers=auth(token)).json()["items"]
        assert {g["id"] for g in current} == {g["id"] for g in published["items"]}


class TestPublishStatements:
    def test_members_of_every_group_are_told_in_one_outbox_insert(
        self, client: TestClient, db: Session, coordinator: Any, world: Any, engine: Any
    ) -> None:
        token = coordinator[1]
        proposal = build(client, token, max_size=3, min_size=2)
        assert len(proposal["groups"]) >= 3
        with Statements(engine) as seen:
            published = publish(client, token, proposal["proposal_id"])
        assert len(published["items"]) >= 3
        inserts = [s for s in seen.seen if s.lstrip().upper().startswith("INSERT INTO OUTBOX")]
        assert len(inserts) == 1, inserts
        rows = db.scalars(
            select(Delivery).where(Delivery.message_kind.in_(("group", "group_contact")))
        ).all()
        assert {r.alert_id for r in rows} == {uuid.UUID(g["id"]) for g in published["items"]}
