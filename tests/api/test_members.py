"""Members API: create, read, change, delete and list; privacy, audit and encryption at rest."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from api.errors import ErrorBody
from api.graphs import GraphStore
from api.members.crypto import contact_cipher
from api.members.models import ApiToken, AuditEvent, Member, MemberRoute, MemberZone
from api.members.schemas import MemberCreated, MemberPage, MemberRead
from api.settings import Settings
from tests.api.conftest import MakeMember
from tests.api.factories import (
    EXAMPLE_MEMBER,
    HELSINKI_LAT,
    HELSINKI_LON,
    auth,
    full_member_body,
    member_body,
    square,
    unique_handle,
)

Caller = tuple[Member, str]


def count(db: Session, model: Any = Member) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


def audit_actions(db: Session, subject_id: uuid.UUID) -> list[tuple[uuid.UUID | None, str]]:
    """Audited accesses to a member by someone (fixtures create members with no actor)."""
    rows = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.subject_id == subject_id, AuditEvent.actor_id.is_not(None))
        .order_by(AuditEvent.id)
    )
    return [(e.actor_id, e.action) for e in rows]


def fresh(db: Session, member_id: uuid.UUID) -> Member | None:
    db.expire_all()
    return db.get(Member, member_id)


class TestCreateMember:
    def test_coordinator_creates_a_member_with_every_field(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        body = full_member_body()
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text
        created = MemberCreated.model_validate(r.json())
        member = created.member
        assert member.handle == body["handle"]
        assert member.roles == ["responder"]
        assert member.home_zone is not None
        assert [list(p) for p in member.home_zone.coordinates[0]] == body["home_zone"][
            "coordinates"
        ][0]
        assert [z.name for z in member.zones] == ["work"]
        assert member.zones[0].days == ["mon", "tue", "wed", "thu", "fri"]
        data = r.json()["member"]
        assert data["zones"][0]["start"] == "09:00"
        assert [route.mode for route in member.routes] == [None, "bike"]
        assert data["routes"][1]["path"] == body["routes"][1]["path"]
        assert data["quiet_hours"] == {"start": "23:00", "end": "06:30"}
        assert member.contact.email == "rosa@example.org"
        assert str(member.contact.webhook_url) == "https://app.example.org/hooks/rosa"

    def test_the_documented_example_is_accepted_and_returned_as_sent(
        self, coordinator: Caller, settings: Settings, engine: Any, session_factory: Any
    ) -> None:
        """The example is in Heidelberg: accepted where no graph limits the service area."""
        from api.main import create_app

        app = create_app(
            settings, engine=engine, session_factory=session_factory, graphs=GraphStore()
        )
        client = TestClient(app, raise_server_exceptions=False)
        body = copy.deepcopy(EXAMPLE_MEMBER)
        body["handle"] = unique_handle("rosa")
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 201, r.text
        data = r.json()["member"]
        MemberRead.model_validate(data)
        for key in ("handle", "roles", "mode", "home_zone", "available", "quiet_hours", "contact"):
            assert data[key] == body[key], key
        assert [{k: z[k] for k in body["zones"][0]} for z in data["zones"]] == body["zones"]
        assert [{k: x[k] for k in body["routes"][0]} for x in data["routes"]] == body["routes"]

    def test_returned_token_authenticates_the_new_member(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        r = client.post("/v1/members", json=member_body(), headers=auth(coordinator[1]))
        created = MemberCreated.model_validate(r.json())
        me = client.get("/v1/members/me", headers=auth(created.token))
        assert me.status_code == 200
        assert MemberRead.model_validate(me.json()).id == created.member.id

    def test_token_is_stored_only_as_its_sha256(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        import hashlib

        r = client.post("/v1/members", json=member_body(), headers=auth(coordinator[1]))
        created = MemberCreated.model_validate(r.json())
        assert len(created.token) >= 43
        rows = db.execute(
            text("SELECT token_hash FROM api_token WHERE member_id = :m"),
            {"m": created.member.id},
        ).all()
        assert [bytes(row[0]) for row in rows] == [hashlib.sha256(created.token.encode()).digest()]
        dump = db.execute(text("SELECT api_token::text FROM api_token")).scalars().all()
        assert not any(created.token in row for row in dump)

    def test_contact_is_encrypted_at_rest(
        self, client: TestClient, coordinator: Caller, db: Session, settings: Settings
    ) -> None:
        r = client.post("/v1/members", json=full_member_body(), headers=auth(coordinator[1]))
        member_id = r.json()["member"]["id"]
        raw = db.execute(
            text("SELECT contact_ciphertext FROM member WHERE id = :id"), {"id": member_id}
        ).scalar_one()
        raw = bytes(raw)
        for secret in (b"rosa@example.org", b"+4962210000000", b"app.example.org"):
            assert secret not in raw
        assert contact_cipher(settings).decrypt(raw) == {
            "email": "rosa@example.org",
            "phone": "+4962210000000",
            "webhook_url": "https://app.example.org/hooks/rosa",
        }

    def test_member_without_contact_stores_no_ciphertext(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        r = client.post("/v1/members", json=member_body(), headers=auth(coordinator[1]))
        assert MemberRead.model_validate(r.json()["member"]).contact.model_dump() == {
            "email": None,
            "phone": None,
            "webhook_url": None,
        }
        stored = fresh(db, uuid.UUID(r.json()["member"]["id"]))
        assert stored is not None and stored.contact_ciphertext is None

    def test_taken_handle_is_409_and_nothing_is_stored(
        self, client: TestClient, coordinator: Caller, responder: Caller, db: Session
    ) -> None:
        before = count(db)
        r = client.post(
            "/v1/members", json=member_body(responder[0].handle), headers=auth(coordinator[1])
        )
        assert r.status_code == 409
        assert ErrorBody.model_validate(r.json()).error == "HandleTaken"
        assert "handle" in r.json()["detail"]
        assert count(db) == before

    def test_responder_without_home_zone_is_422(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        before = count(db)
        body = member_body(roles=["defense"])
        del body["home_zone"]
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 422
        assert r.json() == {
            "error": "InvalidMember",
            "detail": "home_zone: a member with the defense role needs a home zone",
        }
        assert count(db) == before

    def test_coordinator_only_account_needs_no_home_zone(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        body = member_body(roles=["coordinator"])
        del body["home_zone"]
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 201
        assert MemberCreated.model_validate(r.json()).member.home_zone is None

    def test_creation_is_audited_with_the_coordinator_as_actor(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        r = client.post("/v1/members", json=member_body(), headers=auth(coordinator[1]))
        new_id = uuid.UUID(r.json()["member"]["id"])
        assert audit_actions(db, new_id) == [(coordinator[0].id, "member.create")]

    def test_member_may_not_create_members(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        before = count(db)
        r = client.post("/v1/members", json=member_body(), headers=auth(responder[1]))
        assert r.status_code == 403
        assert ErrorBody.model_validate(r.json()).error == "RoleRequired"
        assert count(db) == before

    def test_roles_are_returned_in_a_fixed_order(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        body = member_body(roles=["coordinator", "responder", "defense"])
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.json()["member"]["roles"] == ["responder", "defense", "coordinator"]


class TestReadMe:
    def test_returns_own_record_with_private_fields(
        self, client: TestClient, make_member: MakeMember, db: Session
    ) -> None:
        member, token = make_member(contact={"phone": "+358401234567"})
        r = client.get("/v1/members/me", headers=auth(token))
        assert r.status_code == 200
        me = MemberRead.model_validate(r.json())
        assert me.id == member.id
        assert me.contact.phone == "+358401234567"
        assert me.home_zone is not None
        assert audit_actions(db, member.id) == []

    def test_contact_under_another_secret_key_is_503_not_500(
        self, app: Any, make_member: MakeMember, settings: Settings
    ) -> None:
        from pydantic import SecretStr

        _, token = make_member(contact={"email": "a@example.org"})
        app.state.settings = settings.model_copy(update={"secret_key": SecretStr("k" * 40)})
        r = TestClient(app).get("/v1/members/me", headers=auth(token))
        assert r.status_code == 503
        assert r.json()["error"] == "ContactUnreadable"
        assert "ERN_SECRET_KEY" in r.json()["detail"]


class TestReadMember:
    def test_member_reads_itself_without_audit(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        member, token = responder
        r = client.get(f"/v1/members/{member.id}", headers=auth(token))
        assert MemberRead.model_validate(r.json()).handle == member.handle
        assert audit_actions(db, member.id) == []

    def test_other_members_record_is_404_like_a_missing_one(
        self, client: TestClient, responder: Caller, other_member: Caller
    ) -> None:
        other, _ = other_member
        seen = client.get(f"/v1/members/{other.id}", headers=auth(responder[1]))
        missing_id = uuid.uuid4()
        missing = client.get(f"/v1/members/{missing_id}", headers=auth(responder[1]))
        assert seen.status_code == missing.status_code == 404
        assert seen.json()["error"] == missing.json()["error"] == "MemberNotFound"
        assert seen.json()["detail"].replace(str(other.id), "X") == missing.json()[
            "detail"
        ].replace(str(missing_id), "X")
        assert other.handle not in seen.text

    def test_coordinator_reads_anyone_and_the_read_is_audited(
        self, client: TestClient, coordinator: Caller, responder: Caller, db: Session
    ) -> None:
        member, _ = responder
        r = client.get(f"/v1/members/{member.id}", headers=auth(coordinator[1]))
        assert r.status_code == 200
        assert MemberRead.model_validate(r.json()).home_zone is not None
        events = db.scalars(
            select(AuditEvent).where(
                AuditEvent.subject_id == member.id, AuditEvent.actor_id.is_not(None)
            )
        ).all()
        assert [(e.actor_id, e.action) for e in events] == [(coordinator[0].id, "member.read")]
        assert events[0].at.tzinfo is not None

    def test_coordinator_gets_404_for_an_unknown_id(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        r = client.get(f"/v1/members/{uuid.uuid4()}", headers=auth(coordinator[1]))
        assert r.status_code == 404

    def test_malformed_id_is_422(self, client: TestClient, coordinator: Caller) -> None:
        r = client.get("/v1/members/not-a-uuid", headers=auth(coordinator[1]))
        assert r.status_code == 422
        assert r.json()["detail"].startswith("member_id:")


class TestUpdateMember:
    def test_member_changes_its_own_fields(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        member, token = responder
        patch = {"available": False, "mode": "bike", "speed_mps": 5.5}
        r = client.patch(f"/v1/members/{member.id}", json=patch, headers=auth(token))
        assert r.status_code == 200, r.text
        body = MemberRead.model_validate(r.json())
        assert (body.available, body.mode, body.speed_mps) == (False, "bike", 5.5)
        stored = fresh(db, member.id)
        assert stored is not None and stored.mode == "bike" and stored.available is False

    def test_member_granting_itself_roles_is_422_and_nothing_changes(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        member, token = responder
        patch = {"roles": ["responder", "coordinator"], "available": False}
        r = client.patch(f"/v1/members/{member.id}", json=patch, headers=auth(token))
        assert r.status_code == 422
        assert r.json()["error"] == "FieldNotAllowed"
        assert r.json()["detail"].startswith("roles:")
        stored = fresh(db, member.id)
        assert stored is not None
        assert stored.roles == ["responder"] and stored.available is True

    @pytest.mark.parametrize(
        "patch",
        [{"id": "00000000-0000-0000-0000-000000000000"}, {"created_at": "2020-01-01T00:00:00Z"}],
    )
    def test_read_only_fields_are_unknown_fields(
        self, client: TestClient, responder: Caller, db: Session, patch: dict[str, Any]
    ) -> None:
        member, token = responder
        r = client.patch("/v1/members/me", json=patch, headers=auth(token))
        assert r.status_code == 422
        assert next(iter(patch)) in r.json()["detail"]
        assert fresh(db, member.id) is not None

    def test_coordinator_changes_roles_and_it_is_audited(
        self, client: TestClient, coordinator: Caller, responder: Caller, db: Session
    ) -> None:
        member, _ = responder
        patch = {"roles": ["responder", "defense"]}
        r = client.patch(f"/v1/members/{member.id}", json=patch, headers=auth(coordinator[1]))
        assert r.status_code == 200
        assert MemberRead.model_validate(r.json()).roles == ["responder", "defense"]
        assert audit_actions(db, member.id) == [(coordinator[0].id, "member.update")]

    def test_zones_and_routes_are_replaced_as_lists(
        self, client: TestClient, make_member: MakeMember, db: Session
    ) -> None:
        member, token = make_member(
            **{k: v for k, v in full_member_body().items() if k in ("zones", "routes")}
        )
        assert count(db, MemberZone) >= 1
        new_zone = {
            "name": "gym",
            "area": square(HELSINKI_LON - 0.003, HELSINKI_LAT, 250.0),
            "days": ["sat", "sun"],
            "start": "22:00",
            "end": "01:00",
        }
        r = client.patch(
            "/v1/members/me", json={"zones": [new_zone], "routes": []}, headers=auth(token)
        )
        assert r.status_code == 200, r.text
        body = MemberRead.model_validate(r.json())
        assert [z.name for z in body.zones] == ["gym"]
        assert body.routes == []
        db.expire_all()
        zones = db.scalars(select(MemberZone).where(MemberZone.member_id == member.id)).all()
        routes = db.scalars(select(MemberRoute).where(MemberRoute.member_id == member.id)).all()
        assert [z.name for z in zones] == ["gym"] and routes == []

    def test_null_clears_optional_fields(self, client: TestClient, make_member: MakeMember) -> None:
        _, token = make_member(
            quiet_hours={"start": "22:00", "end": "07:00"}, contact={"email": "a@example.org"}
        )
        r = client.patch(
            "/v1/members/me", json={"quiet_hours": None, "contact": None}, headers=auth(token)
        )
        body = MemberRead.model_validate(r.json())
        assert body.quiet_hours is None
        assert body.contact.email is None

    @pytest.mark.parametrize("field", ["handle", "roles", "mode", "available", "zones", "routes"])
    def test_null_for_a_required_field_is_422(
        self, client: TestClient, coordinator: Caller, responder: Caller, field: str
    ) -> None:
        member, _ = responder
        r = client.patch(
            f"/v1/members/{member.id}", json={field: None}, headers=auth(coordinator[1])
        )
        assert r.status_code == 422
        assert f"{field} may not be null" in r.json()["detail"]

    def test_responder_cannot_drop_its_home_zone(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        member, token = responder
        r = client.patch("/v1/members/me", json={"home_zone": None}, headers=auth(token))
        assert r.status_code == 422
        assert r.json()["detail"].startswith("home_zone:")
        stored = fresh(db, member.id)
        assert stored is not None and stored.home_zone is not None

    @pytest.mark.parametrize("lists", [{"zones": []}, {"routes": []}], ids=["zones", "routes"])
    def test_dropping_the_home_zone_with_new_lists_is_422_not_500(
        self, client: TestClient, responder: Caller, db: Session, lists: dict[str, Any]
    ) -> None:
        # Found by tests/api/test_fuzz_openapi.py: replacing a list loaded the old one, whose
        # autoflush sent home_zone = NULL to the database before the rule was checked (a 500).
        member, token = responder
        body = {"home_zone": None, **lists}
        r = client.patch("/v1/members/me", json=body, headers=auth(token))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("home_zone:")
        stored = fresh(db, member.id)
        assert stored is not None and stored.home_zone is not None

    def test_granting_a_field_role_to_an_account_without_home_zone_is_422(
        self, client: TestClient, coordinator: Caller, make_member: MakeMember, db: Session
    ) -> None:
        bare, _ = make_member(roles=("coordinator",), home_zone=None)
        r = client.patch(
            f"/v1/members/{bare.id}",
            json={"roles": ["coordinator", "responder"]},
            headers=auth(coordinator[1]),
        )
        assert r.status_code == 422
        assert r.json()["detail"] == "home_zone: a member with the responder role needs a home zone"
        stored = fresh(db, bare.id)
        assert stored is not None and stored.roles == ["coordinator"]
        with_zone = client.patch(
            f"/v1/members/{bare.id}",
            json={"roles": ["responder"], "home_zone": square(HELSINKI_LON, HELSINKI_LAT, 300.0)},
            headers=auth(coordinator[1]),
        )
        assert MemberRead.model_validate(with_zone.json()).roles == ["responder"]

    def test_taken_handle_is_409(
        self, client: TestClient, responder: Caller, other_member: Caller
    ) -> None:
        r = client.patch(
            "/v1/members/me", json={"handle": other_member[0].handle}, headers=auth(responder[1])
        )
        assert r.status_code == 409

    def test_member_may_rename_itself(self, client: TestClient, responder: Caller) -> None:
        new = unique_handle("renamed")
        r = client.patch("/v1/members/me", json={"handle": new}, headers=auth(responder[1]))
        assert MemberRead.model_validate(r.json()).handle == new

    def test_other_member_gets_404_and_nothing_changes(
        self, client: TestClient, responder: Caller, other_member: Caller, db: Session
    ) -> None:
        other, _ = other_member
        r = client.patch(
            f"/v1/members/{other.id}", json={"available": False}, headers=auth(responder[1])
        )
        assert r.status_code == 404
        stored = fresh(db, other.id)
        assert stored is not None and stored.available is True

    def test_invalid_geometry_changes_nothing(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        member, token = responder
        before = fresh(db, member.id)
        assert before is not None
        wkb_before = bytes(before.home_zone.data)
        tiny = square(HELSINKI_LON, HELSINKI_LAT, 50.0)
        r = client.patch(
            "/v1/members/me", json={"home_zone": tiny, "available": False}, headers=auth(token)
        )
        assert r.status_code == 422
        assert r.json()["error"] == "InvalidGeometry"
        after = fresh(db, member.id)
        assert after is not None
        assert bytes(after.home_zone.data) == wkb_before and after.available is True


class TestDeleteMember:
    def test_member_deletes_itself_and_its_token_stops_working(
        self, client: TestClient, make_member: MakeMember, db: Session
    ) -> None:
        member, token = make_member(
            **{k: v for k, v in full_member_body().items() if k in ("zones", "routes")}
        )
        member_id = member.id
        r = client.delete(f"/v1/members/{member_id}", headers=auth(token))
        assert r.status_code == 204
        assert fresh(db, member_id) is None
        for model in (MemberZone, MemberRoute, ApiToken):
            left = db.scalar(
                select(func.count()).select_from(model).where(model.member_id == member_id)
            )
            assert left == 0
        assert client.get("/v1/members/me", headers=auth(token)).status_code == 401

    def test_other_member_gets_404_and_nothing_is_deleted(
        self, client: TestClient, responder: Caller, other_member: Caller, db: Session
    ) -> None:
        r = client.delete(f"/v1/members/{other_member[0].id}", headers=auth(responder[1]))
        assert r.status_code == 404
        assert fresh(db, other_member[0].id) is not None

    def test_coordinator_deletes_anyone_and_the_audit_outlives_the_member(
        self, client: TestClient, coordinator: Caller, responder: Caller, db: Session
    ) -> None:
        member_id, coordinator_id = responder[0].id, coordinator[0].id
        r = client.delete(f"/v1/members/{member_id}", headers=auth(coordinator[1]))
        assert r.status_code == 204
        assert fresh(db, member_id) is None
        assert audit_actions(db, member_id) == [(coordinator_id, "member.delete")]


class TestListMembers:
    def test_pages_in_handle_order_with_the_total(
        self, client: TestClient, coordinator: Caller, make_member: MakeMember, db: Session
    ) -> None:
        for _ in range(3):
            make_member()
        total = count(db)
        first = MemberPage.model_validate(
            client.get("/v1/members?limit=2", headers=auth(coordinator[1])).json()
        )
        second = MemberPage.model_validate(
            client.get("/v1/members?limit=2&offset=2", headers=auth(coordinator[1])).json()
        )
        assert first.total == second.total == total
        assert (first.limit, first.offset, len(first.items)) == (2, 0, 2)
        handles = [m.handle for m in first.items + second.items]
        assert handles == sorted(handles)
        assert len(set(handles)) == len(handles)

    def test_items_carry_no_geometry_or_contact(
        self, client: TestClient, coordinator: Caller, make_member: MakeMember
    ) -> None:
        make_member(contact={"email": "hidden@example.org"})
        r = client.get("/v1/members?limit=500", headers=auth(coordinator[1]))
        assert "hidden@example.org" not in r.text
        for item in r.json()["items"]:
            assert not {"home_zone", "zones", "routes", "contact"} & set(item)

    def test_listing_is_audited_once(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        client.get("/v1/members", headers=auth(coordinator[1]))
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.actor_id == coordinator[0].id)
        ).all()
        assert [(e.subject_id, e.action) for e in events] == [(None, "member.list")]

    def test_members_may_not_list(self, client: TestClient, responder: Caller) -> None:
        r = client.get("/v1/members", headers=auth(responder[1]))
        assert r.status_code == 403

    @pytest.mark.parametrize("query", ["limit=0", "limit=501", "offset=-1", "limit=abc"])
    def test_bad_paging_is_422(self, client: TestClient, coordinator: Caller, query: str) -> None:
        r = client.get(f"/v1/members?{query}", headers=auth(coordinator[1]))
        assert r.status_code == 422
        assert r.json()["detail"].split(":")[0] in ("limit", "offset")


class TestAuditTrail:
    def _event(self, db: Session) -> int:
        db.add(AuditEvent(actor_id=uuid.uuid4(), subject_id=uuid.uuid4(), action="member.read"))
        db.flush()
        return db.scalars(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)).one()

    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE audit_event SET action = 'forged' WHERE id = :id",
            "DELETE FROM audit_event WHERE id = :id",
            "TRUNCATE audit_event",
        ],
    )
    def test_database_refuses_to_change_audit_rows(self, db: Session, statement: str) -> None:
        from sqlalchemy.exc import DBAPIError

        event_id = self._event(db)
        with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
            db.execute(text(statement), {"id": event_id})
        action = db.execute(
            text("SELECT action FROM audit_event WHERE id = :id"), {"id": event_id}
        ).scalar_one()
        assert action == "member.read"


class TestConcurrentCreate:
    def test_racing_creates_of_one_handle_give_one_member_and_one_409(
        self, engine: Any, settings: Settings
    ) -> None:
        """Both pass the 'is the handle free' check; the unique index decides, as a 409."""
        import threading

        from api.members import service
        from api.members.errors import HandleTaken
        from api.members.schemas import MemberCreate

        handle = unique_handle("race")
        data = MemberCreate.model_validate(member_body(handle))
        first, second = Session(engine), Session(engine)
        outcome: list[BaseException | None] = []
        try:
            service.create_member(  # row locked, not committed
                first, settings, data, actor=None, graphs=GraphStore()
            )

            def racer() -> None:
                try:
                    service.create_member(second, settings, data, actor=None, graphs=GraphStore())
                    second.commit()
                    outcome.append(None)
                except BaseException as exc:
                    second.rollback()
                    outcome.append(exc)

            thread = threading.Thread(target=racer)
            thread.start()
            thread.join(timeout=1.0)
            assert thread.is_alive(), "the second insert should wait for the first transaction"
            first.commit()
            thread.join(timeout=30)
            assert len(outcome) == 1 and isinstance(outcome[0], HandleTaken)
        finally:
            first.close()
            second.close()
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM member WHERE handle = :h"), {"h": handle})
