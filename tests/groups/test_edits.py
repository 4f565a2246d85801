"""Coordinators' manual moves (within the cap) and rebuilds that keep published groups."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.members.models import AuditEvent, Member
from tests.api.factories import auth
from tests.groups.conftest import WEEKDAYS, WEEKEND
from tests.groups.test_publish import build, publish


@pytest.fixture
def two_groups(client: TestClient, coordinator: Any, commuter: Any) -> dict[str, Any]:
    """Published: weekday-morning walkers and weekend walkers, five each."""
    people: dict[str, list[tuple[Member, str]]] = {"morning": [], "weekend": []}
    for name, days in (("morning", WEEKDAYS), ("weekend", WEEKEND)):
        for i in range(5):
            people[name].append(commuter(days, f"08:{i * 5:02d}", f"08:{30 + i * 5:02d}"))
    answer = publish(client, coordinator[1], build(client, coordinator[1])["proposal_id"])
    group_of = {m["id"]: g for g in answer["items"] for m in g["members"]}
    return {
        "people": people,
        "items": answer["items"],
        "morning": group_of[str(people["morning"][0][0].id)],
        "weekend": group_of[str(people["weekend"][0][0].id)],
    }


def move(client: TestClient, token: str, group_id: str, member_id: Any) -> Any:
    return client.post(
        f"/v1/groups/{group_id}/members", json={"member_id": str(member_id)}, headers=auth(token)
    )


def member_ids(group: dict[str, Any]) -> set[str]:
    return {m["id"] for m in group["members"]}


class TestMove:
    def test_a_member_moves_out_of_its_group_into_another(
        self, client: TestClient, db: Session, coordinator: Any, two_groups: dict[str, Any]
    ) -> None:
        mover = two_groups["people"]["morning"][2][0]
        target = two_groups["weekend"]["id"]
        r = move(client, coordinator[1], target, mover.id)
        assert r.status_code == 200, r.text
        assert str(mover.id) in member_ids(r.json())
        assert member_ids(r.json()) == member_ids(two_groups["weekend"]) | {str(mover.id)}
        old = client.get(f"/v1/groups/{two_groups['morning']['id']}", headers=auth(coordinator[1]))
        assert member_ids(old.json()) == member_ids(two_groups["morning"]) - {str(mover.id)}
        # The member now sees its new group only.
        token = two_groups["people"]["morning"][2][1]
        mine = client.get("/v1/groups", headers=auth(token)).json()["items"]
        assert [g["id"] for g in mine] == [target]
        audit = db.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "group.move", AuditEvent.subject_id == mover.id
            )
        ).all()
        assert [a.actor_id for a in audit] == [coordinator[0].id]

    def test_moving_into_its_own_group_changes_nothing(
        self, client: TestClient, coordinator: Any, two_groups: dict[str, Any]
    ) -> None:
        member = two_groups["people"]["morning"][0][0]
        r = move(client, coordinator[1], two_groups["morning"]["id"], member.id)
        assert r.status_code == 200
        assert member_ids(r.json()) == member_ids(two_groups["morning"])

    def test_a_full_group_is_409(
        self, client: TestClient, coordinator: Any, two_groups: dict[str, Any], make_member: Any
    ) -> None:
        target = two_groups["morning"]["id"]
        size = len(two_groups["morning"]["members"])
        for _ in range(10 - size):
            newcomer, _ = make_member(roles=("responder",))
            assert move(client, coordinator[1], target, newcomer.id).status_code == 200
        one_more, _ = make_member(roles=("responder",))
        r = move(client, coordinator[1], target, one_more.id)
        assert r.status_code == 409, r.text
        group = client.get(f"/v1/groups/{target}", headers=auth(coordinator[1])).json()
        assert len(group["members"]) == 10

    def test_unknown_group_or_member_is_404(
        self, client: TestClient, coordinator: Any, two_groups: dict[str, Any]
    ) -> None:
        member = two_groups["people"]["morning"][0][0]
        assert move(client, coordinator[1], str(uuid.uuid4()), member.id).status_code == 404
        r = move(client, coordinator[1], two_groups["weekend"]["id"], uuid.uuid4())
        assert r.status_code == 404

    def test_another_mode_is_422(
        self, client: TestClient, coordinator: Any, two_groups: dict[str, Any], make_member: Any
    ) -> None:
        cyclist, _ = make_member(roles=("responder",), mode="bike")
        r = move(client, coordinator[1], two_groups["weekend"]["id"], cyclist.id)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("member_id:")

    def test_a_retired_group_is_422(
        self, client: TestClient, coordinator: Any, two_groups: dict[str, Any]
    ) -> None:
        publish(client, coordinator[1], build(client, coordinator[1])["proposal_id"])
        member = two_groups["people"]["morning"][0][0]
        r = move(client, coordinator[1], two_groups["weekend"]["id"], member.id)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("group_id:")

    def test_only_coordinators_move(self, client: TestClient, two_groups: dict[str, Any]) -> None:
        member, token = two_groups["people"]["morning"][0]
        r = move(client, token, two_groups["weekend"]["id"], member.id)
        assert r.status_code == 403


class TestKeep:
    def test_published_groups_stay_together_when_one_member_is_added(
        self, client: TestClient, coordinator: Any, two_groups: dict[str, Any], commuter: Any
    ) -> None:
        newcomer, _ = commuter(WEEKDAYS, "08:10", "08:40")
        answer = build(client, coordinator[1], keep=True)
        assert answer["keep"] is True
        proposed = [set(g["members"]) for g in answer["groups"]]
        for group in two_groups["items"]:
            kept = member_ids(group)
            assert any(kept <= p for p in proposed), (kept, proposed)
        placed = {m for p in proposed for m in p}
        assert str(newcomer.id) in placed

    def test_keep_holds_a_coordinators_edit_that_a_fresh_build_undoes(
        self, client: TestClient, coordinator: Any, two_groups: dict[str, Any]
    ) -> None:
        moved = two_groups["people"]["weekend"][1][0]
        r = move(client, coordinator[1], two_groups["morning"]["id"], moved.id)
        assert r.status_code == 200
        edited = member_ids(r.json())
        unkept = build(client, coordinator[1])
        fresh = [set(g["members"]) for g in unkept["groups"]]
        assert not any(edited <= p for p in fresh), "a fresh build regroups by overlap"
        kept = [set(g["members"]) for g in build(client, coordinator[1], keep=True)["groups"]]
        assert any(edited <= p for p in kept), (edited, kept)
