"""Who may call what: every OpenAPI route x (anonymous, self, other member, coordinator).

HOW TO ADD A ROUTE: add a row to ``MATRIX`` keyed ``(METHOD, path as in openapi.json)`` with the
status each caller gets. The subject of every request is a responder ``S`` ("self" calls as
``S``), "other" is a plain member who is neither ``S`` nor notified of anything, "coordinator"
holds the coordinator role. Path parameters, bodies and headers are built from a ``Ctx``
(``ctx.subject``, ``ctx.alert_id()`` ...). A route without a row fails
``test_every_route_has_a_row``; a row whose route is not mounted is skipped.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.members.models import Member
from api.settings import Settings
from tests.api.conftest import MakeMember
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, auth, member_body, square

CALLERS = ("anonymous", "self", "other", "coordinator")


@dataclass
class Ctx:
    """The people of one matrix cell and lazily created objects they own."""

    client: TestClient
    subject: Member
    subject_token: str
    other: Member
    other_token: str
    coordinator: Member
    coordinator_token: str
    _alert_id: str | None = None
    _proposal_id: str | None = None
    _group_id: str | None = None

    def token(self, caller: str) -> str | None:
        return {
            "anonymous": None,
            "self": self.subject_token,
            "other": self.other_token,
            "coordinator": self.coordinator_token,
        }[caller]

    def alert_id(self) -> str:
        """An alert raised by the subject (created once per cell)."""
        if self._alert_id is None:
            r = self.client.post(
                "/v1/alerts",
                json=alert_body(self),
                headers={**auth(self.subject_token), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 201, r.text
            self._alert_id = r.json()["id"]
        return self._alert_id

    def proposal_id(self) -> str:
        """A buddy-group proposal built by the coordinator (not published)."""
        if self._proposal_id is None:
            r = self.client.post("/v1/groups/build", json={}, headers=auth(self.coordinator_token))
            assert r.status_code == 201, r.text
            self._proposal_id = r.json()["proposal_id"]
        return self._proposal_id

    def group_id(self) -> str:
        """A published buddy group holding the subject (homes in one square), not "other"."""
        if self._group_id is None:
            proposal = self.proposal_id()
            r = self.client.post(
                f"/v1/groups/proposals/{proposal}/publish", headers=auth(self.coordinator_token)
            )
            assert r.status_code == 200, r.text
            self._proposal_id = None  # published: a publish row needs a fresh one
            mine = [g for g in r.json()["items"] if str(self.subject.id) in str(g["members"])]
            assert len(mine) == 1 and str(self.other.id) not in str(mine[0]["members"]), r.text
            self._group_id = mine[0]["id"]
        return self._group_id


def alert_body(_: Ctx) -> dict[str, Any]:
    return {
        "location": {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]},
        "kind": "personal",
        "needed": 1,
    }


def _member_id(ctx: Ctx) -> dict[str, str]:
    return {"member_id": str(ctx.subject.id)}


def _alert_id(ctx: Ctx) -> dict[str, str]:
    return {"alert_id": ctx.alert_id()}


def _subjects_group(ctx: Ctx) -> dict[str, str]:
    """A current buddy group the subject is a plain member of (no point contact)."""
    from api.groups.models import BuddyGroup, BuddyGroupMember

    factory = ctx.client.app.state.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        group = BuddyGroup(
            position=0, mode="walk", shared_minutes=0.0, published_at=datetime.now(UTC)
        )
        session.add(group)
        session.flush()
        session.add(BuddyGroupMember(group_id=group.id, member_id=ctx.subject.id))
        session.commit()
        return {"group_id": str(group.id)}


def _proposal_id(ctx: Ctx) -> dict[str, str]:
    return {"proposal_id": ctx.proposal_id()}


def _group_id(ctx: Ctx) -> dict[str, str]:
    return {"group_id": ctx.group_id()}


def _idempotency(_: Ctx) -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


@dataclass(frozen=True)
class Row:
    """Expected status per caller, and how to build the request."""

    anonymous: int
    self_member: int
    other_member: int
    coordinator: int
    path_params: Callable[[Ctx], dict[str, str]] = lambda _: {}
    body: Callable[[Ctx], Any] | None = None
    headers: Callable[[Ctx], dict[str, str]] = lambda _: {}
    query: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def expected(self, caller: str) -> int:
        return {
            "anonymous": self.anonymous,
            "self": self.self_member,
            "other": self.other_member,
            "coordinator": self.coordinator,
        }[caller]


MATRIX: dict[tuple[str, str], Row] = {
    # --- health (lead) ---
    ("GET", "/healthz"): Row(200, 200, 200, 200, note="public: load balancers"),
    # --- members (foundation) ---
    ("POST", "/v1/members"): Row(401, 403, 403, 201, body=lambda _: member_body()),
    ("GET", "/v1/members"): Row(401, 403, 403, 200),
    ("GET", "/v1/members/me"): Row(401, 200, 200, 200),
    ("PATCH", "/v1/members/me"): Row(401, 200, 200, 200, body=lambda _: {"available": False}),
    ("DELETE", "/v1/members/me"): Row(401, 204, 204, 204, note="self-erasure (issue 16)"),
    ("POST", "/v1/members/me/token"): Row(401, 201, 201, 201),
    ("DELETE", "/v1/members/me/token"): Row(401, 204, 204, 204),
    ("GET", "/v1/members/{member_id}"): Row(401, 200, 404, 200, path_params=_member_id),
    ("PATCH", "/v1/members/{member_id}"): Row(
        401, 200, 404, 200, path_params=_member_id, body=lambda _: {"available": False}
    ),
    ("DELETE", "/v1/members/{member_id}"): Row(401, 204, 404, 204, path_params=_member_id),
    ("POST", "/v1/members/{member_id}/token"): Row(401, 201, 404, 201, path_params=_member_id),
    ("DELETE", "/v1/members/{member_id}/token"): Row(401, 204, 404, 204, path_params=_member_id),
    # --- presence (presence helper) ---
    ("PUT", "/v1/members/me/location"): Row(
        401,
        200,
        200,
        200,
        body=lambda _: {"location": {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]}},
    ),
    ("DELETE", "/v1/members/me/location"): Row(401, 204, 204, 204),
    ("GET", "/v1/members/me/webhook-key"): Row(401, 200, 200, 200),
    # --- busy, snoozed, SMS replies, rallies (issue 14) ---
    ("PUT", "/v1/members/me/snooze"): Row(
        401,
        200,
        200,
        200,
        body=lambda _: {"until": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
    ),
    ("DELETE", "/v1/members/me/snooze"): Row(401, 204, 204, 204),
    ("POST", "/v1/rallies"): Row(
        401,
        403,
        403,
        201,
        body=lambda _: {
            "location": {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]},
            "at": datetime.now(UTC).isoformat(),
            "minutes": 10,
            "text": "thank you",
        },
        headers=_idempotency,
    ),
    ("POST", "/v1/sms/inbound"): Row(
        403,
        403,
        403,
        403,
        note="signed by the gateway; tokens count for nothing",
    ),
    # --- buddy groups (issue 13): texts go from coordinators and the group's point contact ---
    ("POST", "/v1/groups/{group_id}/messages"): Row(
        401,
        404,
        404,
        201,
        path_params=_subjects_group,
        body=lambda _: {"text": "meet at six"},
        headers=_idempotency,
        note="a plain member of the group, like a stranger, gets 404 (no existence oracle)",
    ),
    # --- notify (notify helper) ---
    ("GET", "/v1/deliveries"): Row(401, 403, 403, 200),
    # --- alerts (alerts helper); "self" is the requester of the alert ---
    ("POST", "/v1/alerts"): Row(401, 201, 201, 201, body=alert_body, headers=_idempotency),
    ("GET", "/v1/alerts"): Row(401, 403, 403, 200),
    ("GET", "/v1/alerts/{alert_id}"): Row(401, 200, 404, 200, path_params=_alert_id),
    ("POST", "/v1/alerts/{alert_id}/responses"): Row(
        401,
        404,
        404,
        404,
        path_params=_alert_id,
        body=lambda _: {"answer": "accept"},
        note="only notified members answer; nobody in this cell was notified",
    ),
    ("POST", "/v1/alerts/{alert_id}/close"): Row(401, 200, 404, 200, path_params=_alert_id),
    # --- map page (map helper): the street base layer is for coordinators only ---
    ("GET", "/v1/coverage/streets"): Row(401, 403, 403, 200),
    # --- coverage (issue 12): coordinators, and the coarse public view for any member ---
    ("GET", "/v1/coverage"): Row(401, 403, 403, 200),
    ("GET", "/v1/coverage/profile"): Row(401, 403, 403, 200),
    ("GET", "/v1/coverage/recruit"): Row(401, 403, 403, 200),
    ("GET", "/v1/coverage/public"): Row(401, 200, 200, 200),
    # --- buddy groups (issue 13): "self" is in the group, "other" is not ---
    ("POST", "/v1/groups/build"): Row(401, 403, 403, 201, body=lambda _: {}),
    ("POST", "/v1/groups/proposals/{proposal_id}/publish"): Row(
        401, 403, 403, 200, path_params=_proposal_id
    ),
    ("GET", "/v1/groups"): Row(401, 200, 200, 200, note="members: their own group or none"),
    ("GET", "/v1/groups/{group_id}"): Row(401, 200, 404, 200, path_params=_group_id),
    ("GET", "/v1/groups/{group_id}/roster"): Row(401, 200, 404, 200, path_params=_group_id),
    ("POST", "/v1/groups/{group_id}/members"): Row(
        401,
        403,
        403,
        200,
        path_params=_group_id,
        body=lambda ctx: {"member_id": str(ctx.subject.id)},
        note="moving the subject into the group it is in: no change",
    ),
}


def _routes(app: FastAPI) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the app's OpenAPI document."""
    paths = app.openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


@pytest.fixture(scope="module")
def mounted(settings: Settings, graphs: Any, engine: Engine) -> set[tuple[str, str]]:
    """The routes of an app built like the ``app`` fixture's, computed once for the module."""
    from api.database import make_session_factory
    from api.main import create_app

    app = create_app(
        settings, engine=engine, session_factory=make_session_factory(engine), graphs=graphs
    )
    return _routes(app)


@pytest.fixture
def ctx(client: TestClient, make_member: MakeMember) -> Ctx:
    subject, subject_token = make_member(roles=("responder",))
    # "other" can never be notified of the subject's alerts: no field role, unavailable, and at
    # the far end of the Helsinki graph (farther away, it would be outside the service area).
    other, other_token = make_member(
        roles=(),
        available=False,
        home_zone=square(HELSINKI_LON + 0.011, HELSINKI_LAT + 0.007, 300.0),
    )
    coordinator, coordinator_token = make_member(roles=("coordinator",))
    return Ctx(client, subject, subject_token, other, other_token, coordinator, coordinator_token)


class TestAccessMatrix:
    def test_every_route_has_a_row(self, app: FastAPI, mounted: set[tuple[str, str]]) -> None:
        assert mounted == _routes(app)
        missing = sorted(_routes(app) - set(MATRIX))
        assert not missing, f"routes without an access-matrix row in {__file__}: {missing}"

    @pytest.mark.parametrize(
        ("route", "caller"),
        list(itertools.product(MATRIX, CALLERS)),
        ids=[f"{m} {p} as {c}" for (m, p), c in itertools.product(MATRIX, CALLERS)],
    )
    def test_caller_gets_the_declared_status(
        self, mounted: set[tuple[str, str]], ctx: Ctx, route: tuple[str, str], caller: str
    ) -> None:
        if route not in mounted:
            pytest.skip(f"{route} is not mounted in this app")
        row = MATRIX[route]
        method, template = route
        path = template.format(**row.path_params(ctx))
        headers = dict(row.headers(ctx))
        token = ctx.token(caller)
        if token is not None:
            headers.update(auth(token))
        kwargs: dict[str, Any] = {"headers": headers, "params": row.query}
        if row.body is not None:
            kwargs["json"] = row.body(ctx)
        r = ctx.client.request(method, path, **kwargs)
        assert r.status_code == row.expected(caller), f"{method} {path} as {caller}: {r.text}"
        if r.status_code >= 400:
            assert set(r.json()) == {"error", "detail"}
        if r.status_code == 401:
            assert r.headers.get("www-authenticate") == "Bearer"

    def test_other_member_learns_nothing_from_a_404(self, ctx: Ctx) -> None:
        r = ctx.client.get(f"/v1/members/{ctx.subject.id}", headers=auth(ctx.other_token))
        assert r.status_code == 404
        assert ctx.subject.handle not in r.text

    @pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
    def test_api_documents_are_public(self, client: TestClient, path: str) -> None:
        assert client.get(path).status_code == 200


class TestDocumentedErrors:
    def test_every_operation_documents_its_errors_as_error_body(self, app: FastAPI) -> None:
        doc = app.openapi()
        problems = []
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                errors = {code: spec for code, spec in op["responses"].items() if code[0] in "45"}
                if not errors:
                    problems.append(f"{method.upper()} {path}: no error responses declared")
                for code, spec in errors.items():
                    ref = spec.get("content", {}).get("application/json", {}).get("schema", {})
                    if ref.get("$ref", "").rsplit("/", 1)[-1] not in ("ErrorBody", "Health"):
                        problems.append(f"{method.upper()} {path} {code}: {ref}")
        assert not problems, problems

    def test_fastapis_own_validation_error_shape_is_not_advertised(self, app: FastAPI) -> None:
        schemas = app.openapi().get("components", {}).get("schemas", {})
        assert "HTTPValidationError" not in schemas

    def test_authenticated_routes_document_401(self, app: FastAPI) -> None:
        doc = app.openapi()
        missing = [
            f"{m.upper()} {p}"
            for p, ops in doc["paths"].items()
            for m, op in ops.items()
            if op.get("security") and "401" not in op["responses"]
        ]
        assert not missing

    def test_healthz_documents_its_503_body(self, app: FastAPI) -> None:
        responses = app.openapi()["paths"]["/healthz"]["get"]["responses"]
        assert "503" in responses
