"""No silent coercion between JSON types, in every request body and query parameter (issue 16).

The rule is api.types.RequestModel (bodies) and api.inputs.strict_query (queries). The walks
below go over the app's route table, so a request model or route added later is checked too.
"""

from __future__ import annotations

import json
import re
import types
import typing
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.alerts.schemas import AlertCreate
from api.errors import ErrorBody
from api.members.models import Member
from api.members.schemas import MemberCreate, MemberRead
from api.types import RequestModel
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, auth, member_body, square

Caller = tuple[Member, str]


def _models(annotation: Any, seen: set[type[BaseModel]]) -> None:
    """Every pydantic model reachable from a type annotation (fields, lists, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return
        seen.add(annotation)
        for field in annotation.model_fields.values():
            _models(field.annotation, seen)
        return
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            _models(arg, seen)


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every APIRoute of the app, those of included routers too."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before lazy router inclusion: the routes are copied
        return [r for r in app.routes if isinstance(r, APIRoute)]
    routes = (ctx.original_route for ctx in iter_route_contexts(app.routes))
    return [r for r in routes if isinstance(r, APIRoute)]


def request_models(app: FastAPI) -> dict[type[BaseModel], list[str]]:
    """Each model a route's body takes (nested ones included) -> the operations taking it."""
    found: dict[type[BaseModel], list[str]] = {}
    for route in api_routes(app):
        fields = list(route.dependant.body_params)
        pending = list(route.dependant.dependencies)
        while pending:
            dep = pending.pop()
            fields.extend(dep.body_params)
            pending.extend(dep.dependencies)
        for field in fields:
            seen: set[type[BaseModel]] = set()
            _models(field.field_info.annotation, seen)
            for model in seen:
                found.setdefault(model, []).extend(f"{m} {route.path}" for m in route.methods)
    return found


def _coercing_nodes(node: Any, path: str = "") -> list[str]:
    """Core-schema nodes of bools and numbers that are not strict (pydantic would coerce)."""
    out: list[str] = []
    if isinstance(node, list):
        for i, item in enumerate(node):
            out += _coercing_nodes(item, f"{path}[{i}]")
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("bool", "int", "float") and not node.get("strict"):
            out.append(f"{path}: {kind}")
        for key, value in node.items():
            if key != "cls":
                out += _coercing_nodes(value, f"{path}.{key}")
    return out


class TestEveryRequestModel:
    def test_the_route_table_has_request_models(self, app: FastAPI) -> None:
        # The walk itself works: the known bodies are found, nested models too.
        models = request_models(app)
        assert {AlertCreate, MemberCreate}.issubset(models)
        assert any(m.__name__ == "ZoneIn" for m in models)
        assert any(m.__name__ == "Polygon" for m in models)

    def test_every_request_model_uses_the_rule(self, app: FastAPI) -> None:
        bad = {
            model.__qualname__: ops
            for model, ops in request_models(app).items()
            if not issubclass(model, RequestModel) or model.model_config.get("extra") != "forbid"
        }
        assert not bad, f"request models not deriving from api.types.RequestModel: {bad}"

    def test_no_request_model_coerces_bools_or_numbers(self, app: FastAPI) -> None:
        bad = {
            model.__qualname__: nodes
            for model in request_models(app)
            if (nodes := _coercing_nodes(model.__pydantic_core_schema__))
        }
        assert not bad, bad

    def test_every_operation_refuses_an_unknown_query_parameter(
        self, app: FastAPI, client: TestClient
    ) -> None:
        # From the OpenAPI document: a route added later is covered; anonymous is enough, as
        # the query is checked before anything else.
        ops = [
            (method, path)
            for path, item in app.openapi()["paths"].items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        ]
        assert len(ops) >= 15
        wrong = {}
        for method, path in ops:
            url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path) + "?ern_no_such_name=1"
            r = client.request(method.upper(), url)
            if r.status_code != 422 or not r.json()["detail"].startswith("ern_no_such_name:"):
                wrong[f"{method.upper()} {path}"] = (r.status_code, r.text[:100])
        assert not wrong


def post_member(client: TestClient, token: str, **fields: Any) -> Any:
    body = {**member_body(None, roles=["responder"]), **fields}
    return client.post("/v1/members", json=body, headers=auth(token))


class TestBodies:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("available", 0),
            ("available", 1),
            ("available", "true"),
            ("available", "false"),
            ("available", None),
            ("speed_mps", "1.4"),
            ("speed_mps", True),
        ],
    )
    def test_wrong_json_type_is_422_naming_the_field(
        self, client: TestClient, coordinator: Caller, field: str, value: Any
    ) -> None:
        r = post_member(client, coordinator[1], **{field: value})
        assert r.status_code == 422, r.text
        body = ErrorBody.model_validate(r.json())
        assert body.detail.startswith(f"{field}:"), body.detail

    def test_nested_wrong_type_names_the_path(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        zone = square(HELSINKI_LON, HELSINKI_LAT, 300.0)
        zone["coordinates"][0][1] = [str(zone["coordinates"][0][1][0]), HELSINKI_LAT]
        r = post_member(client, coordinator[1], home_zone=zone)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("home_zone.coordinates.0.1.0:"), r.json()

    def test_unknown_field_is_422(self, client: TestClient, coordinator: Caller) -> None:
        r = post_member(client, coordinator[1], availble=True)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("availble:")

    def test_json_forms_are_taken(self, client: TestClient, coordinator: Caller) -> None:
        # GeoJSON arrays, whole numbers for floats, true/false and "HH:MM" times still work.
        r = post_member(
            client,
            coordinator[1],
            available=False,
            speed_mps=2,
            quiet_hours={"start": "22:00", "end": "06:00"},
        )
        assert r.status_code == 201, r.text
        read = MemberRead.model_validate(r.json()["member"])
        assert read.available is False
        assert read.speed_mps == 2.0
        assert read.home_zone is not None

    def test_patch_bool_is_strict(self, client: TestClient, responder: Caller) -> None:
        r = client.patch("/v1/members/me", json={"available": 0}, headers=auth(responder[1]))
        assert r.status_code == 422
        assert r.json()["detail"].startswith("available:")
        r = client.patch("/v1/members/me", json={"available": False}, headers=auth(responder[1]))
        assert r.status_code == 200
        assert r.json()["available"] is False

    def _alert(self, **fields: Any) -> dict[str, Any]:
        point = {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]}
        return {"location": point, "kind": "mass", "needed": 1, **fields}

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("needed", "1"),
            ("needed", 1.5),
            ("needed", True),
            ("exercise", 1),
            ("at", 1_780_000_000),
            ("at", 1.5),
        ],
    )
    def test_alert_fields_are_strict(
        self, client: TestClient, coordinator: Caller, field: str, value: Any
    ) -> None:
        headers = {**auth(coordinator[1]), "Idempotency-Key": f"strict-{field}-{value}"}
        r = client.post("/v1/alerts", json=self._alert(**{field: value}), headers=headers)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"{field}:"), r.json()

    @pytest.mark.parametrize("text", ["a\\ud800b", "\\udfff", "\\ud83d"])
    def test_lone_surrogate_in_text_is_422_naming_the_field(
        self, client: TestClient, coordinator: Caller, text: str
    ) -> None:
        # JSON can escape a lone surrogate; UTF-8 cannot hold it (psycopg raised: a 500).
        raw = json.dumps(self._alert(note="x")).replace('"x"', f'"{text}"')
        headers = {
            **auth(coordinator[1]),
            "Idempotency-Key": f"strict-surrogate-{text}",
            "Content-Type": "application/json",
        }
        r = client.post("/v1/alerts", content=raw.encode(), headers=headers)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("note:"), r.json()
        assert "surrogate" in r.json()["detail"]

    def test_a_surrogate_pair_is_taken(self, client: TestClient, coordinator: Caller) -> None:
        raw = json.dumps(self._alert(note="x", exercise=True)).replace('"x"', '"ok \\ud83d\\ude00"')
        headers = {
            **auth(coordinator[1]),
            "Idempotency-Key": "strict-surrogate-pair",
            "Content-Type": "application/json",
        }
        r = client.post("/v1/alerts", content=raw.encode(), headers=headers)
        assert r.status_code == 201, r.text

    def test_alert_iso_datetime_is_taken(self, client: TestClient, coordinator: Caller) -> None:
        body = self._alert(at="2026-12-02T18:30:00+02:00", exercise=True)
        headers = {**auth(coordinator[1]), "Idempotency-Key": "strict-iso"}
        r = client.post("/v1/alerts", json=body, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["presence_at"].startswith("2026-12-02T16:30:00")

    def test_location_coordinates_refuse_strings(
        self, client: TestClient, responder: Caller
    ) -> None:
        url = "/v1/members/me/location"
        bad = {"location": {"type": "Point", "coordinates": [str(HELSINKI_LON), HELSINKI_LAT]}}
        r = client.put(url, json=bad, headers=auth(responder[1]))
        assert r.status_code == 422
        assert r.json()["detail"].startswith("location.coordinates.0:")


class TestQuery:
    @pytest.mark.parametrize(
        ("query", "name"),
        [
            ("limit=1.0", "limit"),
            ("limit=true", "limit"),
            ("limit=%2010", "limit"),
            ("until=0.5", "until"),
            ("since=1780000000", "since"),
            ("limt=10", "limt"),
        ],
    )
    def test_bad_query_is_422_naming_it(
        self, client: TestClient, coordinator: Caller, query: str, name: str
    ) -> None:
        r = client.get(f"/v1/alerts?{query}", headers=auth(coordinator[1]))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"{name}:"), r.json()

    def test_good_query_is_taken(self, client: TestClient, coordinator: Caller) -> None:
        q = "limit=5&offset=0&since=2026-01-01T00:00:00Z&until=2030-01-01T00:00:00%2B02:00"
        r = client.get(f"/v1/alerts?{q}", headers=auth(coordinator[1]))
        assert r.status_code == 200, r.text
        r = client.get("/v1/members?limit=5", headers=auth(coordinator[1]))
        assert r.status_code == 200, r.text

    def test_unknown_query_on_a_route_without_parameters(
        self, client: TestClient, responder: Caller
    ) -> None:
        r = client.get("/v1/members/me?debug=1", headers=auth(responder[1]))
        assert r.status_code == 422
        assert r.json()["detail"] == "debug: unknown query parameter"


class TestResponderRoutes:
    """The routes of the responders work: snoozes and rallies follow the same rule."""

    @pytest.mark.parametrize(
        "until", [1_780_000_000, 1.5, True, False, None, "P1D", "2026-12-24T10:00:00"]
    )
    def test_a_snooze_takes_only_an_iso_time_with_offset(
        self, client: TestClient, responder: Caller, until: Any
    ) -> None:
        r = client.put("/v1/members/me/snooze", json={"until": until}, headers=auth(responder[1]))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("until:"), r.json()
        me = client.get("/v1/members/me", headers=auth(responder[1])).json()
        assert me["snoozed_until"] is None

    def test_a_snooze_refuses_unknown_fields_and_takes_iso(
        self, client: TestClient, responder: Caller
    ) -> None:
        until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        url, headers = "/v1/members/me/snooze", auth(responder[1])
        r = client.put(url, json={"until": until, "minutes": 30}, headers=headers)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("minutes:"), r.json()
        r = client.put(url, json={"until": until}, headers=headers)
        assert r.status_code == 200, r.text

    def _rally(self, **fields: Any) -> dict[str, Any]:
        point = {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]}
        at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        return {"location": point, "at": at, "minutes": 15, "text": "meet here", **fields}

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("minutes", "15"),
            ("minutes", 15.5),
            ("minutes", True),
            ("everyone", 1),
            ("everyone", "true"),
            ("at", 1_780_000_000),
            ("text", 5),
            ("text", ["meet"]),
            ("colour", "red"),
        ],
    )
    def test_rally_fields_are_strict(
        self, client: TestClient, coordinator: Caller, field: str, value: Any
    ) -> None:
        headers = {**auth(coordinator[1]), "Idempotency-Key": f"strict-rally-{field}-{value}"}
        r = client.post("/v1/rallies", json=self._rally(**{field: value}), headers=headers)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"{field}:"), r.json()
