"""Schemathesis over every operation of the OpenAPI schema: never a 5xx, answers as documented.

Every operation, as a coordinator, a responder, a member without roles and anonymously, with
schema-valid and schema-violating input (a fixed seed, 15 examples per operation and phase),
against the test database. All Schemathesis checks run, except where ern's documented
behaviour is stricter or laxer than a JSON schema can say (SEMANTIC_422, /v1/members/me
below). Wrong JSON types are refused (api.types.RequestModel, api.inputs.strict_query), so
negative_data_rejection runs everywhere.

Isolation: each example runs in a savepoint rolled back after it (a DELETE or a token rotation
does not change what the next example sees), inside the test's rolled-back transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis import Case
from sqlalchemy import Connection

from api.main import create_app
from api.members.models import Member
from api.settings import Settings
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, auth
from tests.conftest import TEST_SECRET

Caller = tuple[Member, str]

# Operations whose bodies meet rules no JSON schema can say (service area, zone size and
# self-intersection, who may change roles): a schema-valid body may get their documented 422.
SEMANTIC_422 = [
    "POST /v1/alerts",
    "PUT /v1/members/me/location",
    "POST /v1/members",
    "PATCH /v1/members/me",
    "PATCH /v1/members/{member_id}",
    # an ISO 8601 `at` that is no real date, hours beyond the week
    "GET /v1/coverage",
    "GET /v1/coverage/public",
    "GET /v1/coverage/recruit",
    # A snooze ends in the future, at most 7 days ahead; a rally's place is in the service area
    "PUT /v1/members/me/snooze",
    "POST /v1/rallies",
    # A group text's PlainText refuses NUL (not in the schema); ERN_GROUP_MESSAGE_RATE is a 429
    "POST /v1/groups/{group_id}/messages",
    # min_size at most max_size; a member moves only into a current group of its own mode
    "POST /v1/groups/build",
    "POST /v1/groups/{group_id}/members",
]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261124,
        "generation": {
            "mode": "all",
            "deterministic": True,
            "database": "none",
            "max-examples": 15,
        },
        "operations": [
            {
                "include-name": SEMANTIC_422,
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", 401, 403, 404, 409, 422, 429]
                    }
                },
            },
            {
                # PUT/POST /v1/members/me are /v1/members/{member_id} with a bad id: 422, not 405.
                "include-path": "/v1/members/me",
                "checks": {"unsupported_method": {"enabled": False}},
            },
        ],
    }
)


def _schema_app() -> FastAPI:
    # The schema is loaded at collection (schemathesis.pytest.from_fixture, the lazy loader,
    # breaks on pytest 9: Function._nodeid is gone); the tests call their own app (app=...).
    # This one only serves /openapi.json; its lifespan does nothing (everything injected).
    settings = Settings(
        database_url="postgresql+psycopg://unused@127.0.0.1:1/unused",
        secret_key=SecretStr(TEST_SECRET),
        run_workers=False,
    )
    return create_app(settings, session_factory=object(), graphs=object())  # type: ignore[arg-type]


schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app(), config=CONFIG)


@pytest.fixture
def world(
    client: TestClient, coordinator: Caller, responder: Caller, other_member: Caller
) -> dict[str, str]:
    """Rows for the fuzzer to find: a drill alert near the members (ids by path parameter)."""
    alert = {
        "location": {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]},
        "kind": "mass",
        "needed": 1,
        "exercise": True,
    }
    headers = {**auth(coordinator[1]), "Idempotency-Key": "fuzz-world"}
    r = client.post("/v1/alerts", json=alert, headers=headers)
    assert r.status_code == 201, r.text
    return {"alert_id": r.json()["id"], "group_id": _group(client, responder, other_member)}


def _group(client: TestClient, *members: Caller) -> str:
    """A current buddy group of these members (published as the publish route would)."""
    from api.groups.models import BuddyGroup, BuddyGroupMember

    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        group = BuddyGroup(
            position=0, mode="walk", shared_minutes=0.0, published_at=datetime.now(UTC)
        )
        session.add(group)
        session.flush()
        session.add_all(BuddyGroupMember(group_id=group.id, member_id=m.id) for m, _ in members)
        session.commit()
        return str(group.id)


def call_rolled_back(
    case: Case[Any], app: FastAPI, connection: Connection, token: str | None, ids: dict[str, str]
) -> None:
    """Call the app inside a savepoint rolled back after it: each example sees the same rows.

    A well-formed id in the path is swapped for a real one (else nearly every example is a 404);
    malformed ids are kept, so their 422 is still tried.
    """
    for name, real in ids.items():
        value = case.path_parameters.get(name) if case.path_parameters else None
        if case.path_parameters and isinstance(value, str) and _is_uuid(value):
            case.path_parameters[name] = real
    savepoint = connection.begin_nested()
    try:
        case.call_and_validate(app=app, headers=auth(token) if token else None)
    finally:
        if savepoint.is_active:
            savepoint.rollback()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


fuzz_settings = hypothesis_settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.slow
@schema.parametrize()
@fuzz_settings
def test_as_coordinator(
    case: Case[Any],
    app: FastAPI,
    connection: Connection,
    coordinator: Caller,
    responder: Caller,
    world: dict[str, str],
) -> None:
    """A coordinator, on a responder's record: every route is open to it."""
    ids = {**world, "member_id": str(responder[0].id)}
    call_rolled_back(case, app, connection, coordinator[1], ids)


@pytest.mark.slow
@schema.parametrize()
@fuzz_settings
def test_as_responder(
    case: Case[Any],
    app: FastAPI,
    connection: Connection,
    responder: Caller,
    other_member: Caller,
    world: dict[str, str],
) -> None:
    """A responder, on someone else's record: 403 or 404 where it may not look."""
    ids = {**world, "member_id": str(other_member[0].id)}
    call_rolled_back(case, app, connection, responder[1], ids)


@pytest.mark.slow
@schema.parametrize()
@fuzz_settings
def test_as_member_without_roles(
    case: Case[Any],
    app: FastAPI,
    connection: Connection,
    make_member: Any,
    responder: Caller,
    world: dict[str, str],
) -> None:
    """A member with no role, on a responder's record: 403 or 404 where it may not look."""
    _, token = make_member(roles=())
    ids = {**world, "member_id": str(responder[0].id)}
    call_rolled_back(case, app, connection, token, ids)


@pytest.mark.slow
@schema.parametrize()
@fuzz_settings
def test_anonymous(
    case: Case[Any],
    app: FastAPI,
    connection: Connection,
    responder: Caller,
    world: dict[str, str],
) -> None:
    """No token at all: 401 everywhere but /healthz, never a 5xx, as documented."""
    ids = {**world, "member_id": str(responder[0].id)}
    call_rolled_back(case, app, connection, None, ids)
