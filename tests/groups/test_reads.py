"""Reading groups and rosters: coordinators all, members their own, 404 for anyone else."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.groups.schemas import GroupRead, Roster
from api.members.models import Member
from tests.alerts.test_canary import leaks
from tests.api.factories import auth
from tests.groups.conftest import WEEKDAYS, WEEKEND
from tests.groups.test_publish import build, publish


def _contact(handle: str) -> dict[str, str]:
    return {
        "webhook_url": "http://127.0.0.1:9/hook",
        "email": f"{handle}@example.org",
        "phone": "+358401234567",
    }


@pytest.fixture
def published(client: TestClient, coordinator: Any, commuter: Any) -> dict[str, Any]:
    """Two published groups (weekday mornings, weekends) of walkers sharing as they chose."""
    shares = [["email"], ["phone"], ["email", "phone"], [], ["email"]]
    people: dict[str, list[tuple[Member, str]]] = {"morning": [], "weekend": []}
    for name, days in (("morning", WEEKDAYS), ("weekend", WEEKEND)):
        for i, share in enumerate(shares):
            handle = f"walker-{name}-{i}-{uuid.uuid4().hex[:6]}"
            roles = ("responder", "defense") if (name, i) == ("weekend", 0) else ("responder",)
            people[name].append(
                commuter(
                    days,
                    f"08:{i * 5:02d}",
                    f"08:{30 + i * 5:02d}",
                    roles=roles,
                    handle=handle,
                    contact=_contact(handle),
                    share_with_group=share,
                )
            )
    answer = publish(client, coordinator[1], build(client, coordinator[1])["proposal_id"])
    group_of = {m["id"]: g for g in answer["items"] for m in g["members"]}
    morning = group_of[str(people["morning"][0][0].id)]
    weekend = group_of[str(people["weekend"][0][0].id)]
    assert morning["id"] != weekend["id"]
    return {"people": people, "morning": morning, "weekend": weekend, "items": answer["items"]}


class TestListAndRead:
    def test_a_member_lists_only_its_own_group(
        self, client: TestClient, published: dict[str, Any]
    ) -> None:
        member, token = published["people"]["morning"][1]
        r = client.get("/v1/groups", headers=auth(token))
        assert r.status_code == 200
        items = r.json()["items"]
        assert [g["id"] for g in items] == [published["morning"]["id"]]
        assert str(member.id) in {m["id"] for m in items[0]["members"]}

    def test_a_member_of_no_group_lists_nothing(
        self, client: TestClient, published: dict[str, Any], make_member: Any
    ) -> None:
        _, token = make_member(roles=(), mode="bike")
        r = client.get("/v1/groups", headers=auth(token))
        assert r.status_code == 200 and r.json()["items"] == []

    def test_history_is_for_coordinators_only(
        self, client: TestClient, published: dict[str, Any]
    ) -> None:
        _, token = published["people"]["morning"][1]
        r = client.get("/v1/groups", params={"history": "true"}, headers=auth(token))
        assert r.status_code == 403
        r = client.get("/v1/groups", params={"history": "yes"}, headers=auth(token))
        assert r.status_code == 422 and "history" in r.json()["detail"]

    def test_member_reads_its_group_and_gets_404_for_another(
        self, client: TestClient, published: dict[str, Any]
    ) -> None:
        _, token = published["people"]["morning"][1]
        own = client.get(f"/v1/groups/{published['morning']['id']}", headers=auth(token))
        assert own.status_code == 200
        group = GroupRead.model_validate(own.json())
        assert group.id == uuid.UUID(published["morning"]["id"])
        assert {m.handle for m in group.members} >= {
            m.handle for m, _ in published["people"]["morning"]
        }
        for path in (f"/v1/groups/{published['weekend']['id']}", f"/v1/groups/{uuid.uuid4()}"):
            r = client.get(path, headers=auth(token))
            assert r.status_code == 404
            assert r.json()["error"] == "GroupNotFound"

    def test_the_point_contact_reads_the_group_it_serves(
        self, client: TestClient, coordinator: Any, published: dict[str, Any]
    ) -> None:
        served = [
            g
            for g in published["items"]
            if g["point_contact"] is not None
            and g["point_contact"]["id"] not in {m["id"] for m in g["members"]}
        ]
        assert served, "the one defence walker should also serve a group it is not in"
        group = served[0]
        contact_id = group["point_contact"]["id"]
        token = next(
            t for ms in published["people"].values() for m, t in ms if str(m.id) == contact_id
        )
        r = client.get(f"/v1/groups/{group['id']}", headers=auth(token))
        assert r.status_code == 200
        assert r.json()["point_contact"]["id"] == contact_id
        listed = client.get("/v1/groups", headers=auth(token)).json()["items"]
        assert group["id"] in {g["id"] for g in listed}
        roster = client.get(f"/v1/groups/{group['id']}/roster", headers=auth(token))
        assert roster.status_code == 200

    def test_coordinator_reads_every_group(
        self, client: TestClient, coordinator: Any, published: dict[str, Any]
    ) -> None:
        for group in published["items"]:
            r = client.get(f"/v1/groups/{group['id']}", headers=auth(coordinator[1]))
            assert r.status_code == 200
            assert r.json() == group

    def test_a_retired_group_is_gone_for_members_kept_for_coordinators(
        self, client: TestClient, coordinator: Any, published: dict[str, Any]
    ) -> None:
        publish(client, coordinator[1], build(client, coordinator[1])["proposal_id"])
        _, token = published["people"]["morning"][1]
        old = published["morning"]["id"]
        assert client.get(f"/v1/groups/{old}", headers=auth(token)).status_code == 404
        r = client.get(f"/v1/groups/{old}", headers=auth(coordinator[1]))
        assert r.status_code == 200 and r.json()["retired_at"] is not None


class TestRoster:
    def test_json_shows_only_the_channels_each_member_shares(
        self, client: TestClient, published: dict[str, Any]
    ) -> None:
        people = published["people"]["morning"]
        _, token = people[3]
        r = client.get(f"/v1/groups/{published['morning']['id']}/roster", headers=auth(token))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        roster = Roster.model_validate(r.json())
        entries = {e.handle: e for e in roster.items}
        for member, _ in people:
            entry = entries[member.handle]
            shared = set(member.share_with_group)
            assert entry.email == (f"{member.handle}@example.org" if "email" in shared else None)
            assert entry.phone == ("+358401234567" if "phone" in shared else None)
        # Never the webhook, never a place.
        assert "webhook" not in r.text and "127.0.0.1" not in r.text
        assert "coordinates" not in r.text

    def test_csv_has_the_header_and_only_shared_channels(
        self, client: TestClient, coordinator: Any, published: dict[str, Any]
    ) -> None:
        people = published["people"]["morning"]
        headers = {**auth(coordinator[1]), "Accept": "text/csv"}
        r = client.get(f"/v1/groups/{published['morning']['id']}/roster", headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == ["handle", "email", "phone"]
        by_handle = {row[0]: row for row in rows[1:]}
        assert len(by_handle) == len(published["morning"]["members"])
        for member, _ in people:
            _, email, phone = by_handle[member.handle]
            shared = set(member.share_with_group)
            assert email == (f"{member.handle}@example.org" if "email" in shared else "")
            assert phone == ("+358401234567" if "phone" in shared else "")

    def test_someone_outside_the_group_gets_404(
        self, client: TestClient, published: dict[str, Any], make_member: Any
    ) -> None:
        _, stranger = make_member(roles=("responder",))
        _, weekender = published["people"]["weekend"][2]
        for token in (stranger, weekender):
            for accept in ("application/json", "text/csv"):
                r = client.get(
                    f"/v1/groups/{published['morning']['id']}/roster",
                    headers={**auth(token), "Accept": accept},
                )
                assert r.status_code == 404
                assert "example.org" not in r.text


class TestShareWithGroup:
    def test_members_read_and_change_their_choice(
        self, client: TestClient, make_member: Any
    ) -> None:
        _, token = make_member(roles=(), share_with_group=["phone", "email"])
        me = client.get("/v1/members/me", headers=auth(token)).json()
        assert me["share_with_group"] == ["email", "phone"]
        r = client.patch(
            "/v1/members/me", json={"share_with_group": ["phone"]}, headers=auth(token)
        )
        assert r.status_code == 200 and r.json()["share_with_group"] == ["phone"]

    def test_default_is_none(self, client: TestClient, make_member: Any) -> None:
        _, token = make_member(roles=())
        assert client.get("/v1/members/me", headers=auth(token)).json()["share_with_group"] == []

    @pytest.mark.parametrize(
        "value", [["webhook"], ["email", "email"], "email", None, [1], ["EMAIL"]]
    )
    def test_anything_else_is_422(self, client: TestClient, make_member: Any, value: Any) -> None:
        _, token = make_member(roles=())
        r = client.patch("/v1/members/me", json={"share_with_group": value}, headers=auth(token))
        assert r.status_code == 422, r.text
        assert "share_with_group" in r.json()["detail"]


class TestNoPlaces:
    def test_group_reads_and_rosters_carry_no_members_places(
        self, client: TestClient, db: Any, published: dict[str, Any]
    ) -> None:
        from geoalchemy2.shape import to_shape

        people = [m for ms in published["people"].values() for m in ms]
        places: list[tuple[float, float]] = []
        for member, _ in people:
            stored = db.get(Member, member.id)
            places += [tuple(p) for p in to_shape(stored.home_zone).exterior.coords]
            places.append(tuple(to_shape(stored.home_zone).centroid.coords[0]))
            for route in stored.routes:
                places += [tuple(p) for p in to_shape(route.path).coords]
        _, token = published["people"]["morning"][1]
        group = published["morning"]["id"]
        texts = [
            client.get("/v1/groups", headers=auth(token)).text,
            client.get(f"/v1/groups/{group}", headers=auth(token)).text,
            client.get(f"/v1/groups/{group}/roster", headers=auth(token)).text,
            client.get(
                f"/v1/groups/{group}/roster", headers={**auth(token), "Accept": "text/csv"}
            ).text,
        ]
        # The search finds places where they are meant to be (the member's own record).
        assert leaks(client.get("/v1/members/me", headers=auth(token)).text, places)
        for text in texts:
            assert not leaks(text, places), text

    def test_csv_cells_cannot_run_as_spreadsheet_formulas(
        self, client: TestClient, coordinator: Any, commuter: Any
    ) -> None:
        tricky, _ = commuter(
            WEEKDAYS,
            "08:00",
            "08:30",
            contact={"webhook_url": "http://127.0.0.1:9/hook", "email": "=cmd|1@example.org"},
            share_with_group=["email"],
        )
        for _ in range(3):
            commuter(WEEKDAYS, "08:00", "08:30")
        answer = publish(client, coordinator[1], build(client, coordinator[1])["proposal_id"])
        group = next(g for g in answer["items"] if str(tricky.id) in str(g["members"]))
        r = client.get(
            f"/v1/groups/{group['id']}/roster",
            headers={**auth(coordinator[1]), "Accept": "text/csv"},
        )
        row = next(x for x in csv.reader(io.StringIO(r.text)) if x[0] == tricky.handle)
        assert row[1] == "'=cmd|1@example.org"
        # JSON keeps the address as given.
        roster = client.get(f"/v1/groups/{group['id']}/roster", headers=auth(coordinator[1]))
        entry = next(e for e in roster.json()["items"] if e["handle"] == tricky.handle)
        assert entry["email"] == "=cmd|1@example.org"
