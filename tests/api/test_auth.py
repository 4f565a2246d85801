"""Bearer tokens: 401s, rotation and revocation (own and by coordinators), role checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import is_coordinator, require_role
from api.errors import ErrorBody
from api.members.crypto import hash_token
from api.members.models import ApiToken, Member
from api.members.schemas import MemberRead, TokenIssued
from tests.api.conftest import MakeMember
from tests.api.factories import auth

Caller = tuple[Member, str]


def _me(client: TestClient, token: str) -> int:
    return client.get("/v1/members/me", headers=auth(token)).status_code


class TestMissingOrBadToken:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer not-a-real-token"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer " + "x" * 5000},
            {"Authorization": "bearer"},
        ],
    )
    def test_is_401_with_error_body_and_challenge(
        self, client: TestClient, headers: dict[str, str]
    ) -> None:
        r = client.get("/v1/members/me", headers=headers)
        assert r.status_code == 401
        body = ErrorBody.model_validate(r.json())
        assert body.error in ("InvalidToken", "Unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"

    def test_valid_token_with_the_scheme_in_any_case_is_accepted(
        self, client: TestClient, responder: Caller
    ) -> None:
        r = client.get("/v1/members/me", headers={"Authorization": f"bearer {responder[1]}"})
        assert r.status_code == 200

    def test_token_of_a_deleted_member_is_401(
        self, client: TestClient, coordinator: Caller, responder: Caller
    ) -> None:
        member_id, token = responder[0].id, responder[1]
        client.delete(f"/v1/members/{member_id}", headers=auth(coordinator[1]))
        assert _me(client, token) == 401


class TestRotateMyToken:
    def test_old_token_is_revoked_and_new_one_works(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        member, old = responder
        r = client.post("/v1/members/me/token", headers=auth(old))
        assert r.status_code == 201
        issued = TokenIssued.model_validate(r.json())
        assert issued.member_id == member.id and issued.token != old
        assert _me(client, old) == 401
        assert _me(client, issued.token) == 200
        db.expire_all()
        row = db.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(old))).one()
        assert row.revoked_at is not None

    def test_only_the_calling_token_is_rotated(
        self, client: TestClient, coordinator: Caller, responder: Caller
    ) -> None:
        member, first = responder
        second = TokenIssued.model_validate(
            client.post(f"/v1/members/{member.id}/token", headers=auth(coordinator[1])).json()
        ).token
        assert _me(client, first) == 401  # a coordinator's rotation replaced every token
        third = TokenIssued.model_validate(
            client.post("/v1/members/me/token", headers=auth(second)).json()
        ).token
        assert (_me(client, second), _me(client, third)) == (401, 200)


class TestRevokeMyToken:
    def test_revoked_token_is_401_afterwards(self, client: TestClient, responder: Caller) -> None:
        token = responder[1]
        r = client.delete("/v1/members/me/token", headers=auth(token))
        assert r.status_code == 204
        assert r.content == b""
        assert _me(client, token) == 401
        assert client.delete("/v1/members/me/token", headers=auth(token)).status_code == 401

    def test_other_tokens_of_the_member_stay_valid(
        self, client: TestClient, responder: Caller, db: Session
    ) -> None:
        from api.members import service

        member, first = responder
        second = service.issue_token(db, member)
        db.commit()
        client.delete("/v1/members/me/token", headers=auth(first))
        assert (_me(client, first), _me(client, second)) == (401, 200)


class TestMemberTokens:
    def test_coordinator_revokes_all_of_a_members_tokens(
        self, client: TestClient, coordinator: Caller, responder: Caller, db: Session
    ) -> None:
        from api.members import service

        member, first = responder
        second = service.issue_token(db, member)
        db.commit()
        r = client.delete(f"/v1/members/{member.id}/token", headers=auth(coordinator[1]))
        assert r.status_code == 204
        assert (_me(client, first), _me(client, second)) == (401, 401)

    def test_coordinator_rotation_is_audited(
        self, client: TestClient, coordinator: Caller, responder: Caller, db: Session
    ) -> None:
        from api.members.models import AuditEvent

        member_id = responder[0].id
        client.post(f"/v1/members/{member_id}/token", headers=auth(coordinator[1]))
        client.delete(f"/v1/members/{member_id}/token", headers=auth(coordinator[1]))
        actions = db.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.subject_id == member_id, AuditEvent.actor_id == coordinator[0].id)
            .order_by(AuditEvent.id)
        ).all()
        assert actions == ["token.rotate", "token.revoke"]

    def test_other_member_cannot_touch_someone_elses_tokens(
        self, client: TestClient, responder: Caller, other_member: Caller
    ) -> None:
        other, other_token = other_member
        assert (
            client.post(f"/v1/members/{other.id}/token", headers=auth(responder[1])).status_code
            == 404
        )
        assert (
            client.delete(f"/v1/members/{other.id}/token", headers=auth(responder[1])).status_code
            == 404
        )
        assert _me(client, other_token) == 200

    def test_revoked_at_uses_the_app_clock(
        self,
        app,
        responder: Caller,
        db: Session,  # type: ignore[no-untyped-def]
    ) -> None:
        from fastapi.testclient import TestClient as Client

        from api.clock import ManualClock

        when = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
        app.state.clock = ManualClock(when)
        Client(app).delete("/v1/members/me/token", headers=auth(responder[1]))
        db.expire_all()
        row = db.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(responder[1]))
        ).one()
        assert row.revoked_at == when


class TestRoles:
    def test_coordinator_only_route_is_403_for_members(
        self, client: TestClient, make_member: MakeMember
    ) -> None:
        _, token = make_member(roles=("responder", "defense"))
        r = client.get("/v1/members", headers=auth(token))
        assert r.status_code == 403
        assert r.json() == {"error": "RoleRequired", "detail": "this needs the coordinator role"}

    def test_is_coordinator_and_require_role(self, make_member: MakeMember) -> None:
        from api.members.errors import RoleRequired

        coord, _ = make_member(roles=("coordinator",))
        resp, _ = make_member(roles=("responder",))
        assert is_coordinator(coord) and not is_coordinator(resp)
        check = require_role("defense")
        with pytest.raises(RoleRequired, match="defense"):
            asyncio.run(check(resp))
        defender, _ = make_member(roles=("defense",))
        assert asyncio.run(check(defender)) is defender

    def test_role_change_takes_effect_on_the_next_request(
        self, client: TestClient, coordinator: Caller, responder: Caller
    ) -> None:
        member, token = responder
        assert client.get("/v1/members", headers=auth(token)).status_code == 403
        r = client.patch(
            f"/v1/members/{member.id}",
            json={"roles": ["responder", "coordinator"]},
            headers=auth(coordinator[1]),
        )
        assert MemberRead.model_validate(r.json()).roles == ["responder", "coordinator"]
        assert client.get("/v1/members", headers=auth(token)).status_code == 200
