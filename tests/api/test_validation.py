"""Bad member input: 422 naming the field and nothing stored, 413 for big bodies, never a 500."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ErrorBody
from api.members.models import Member
from api.members.schemas import MemberCreated
from tests.api.factories import (
    HELSINKI_LAT,
    HELSINKI_LON,
    auth,
    full_member_body,
    line,
    member_body,
    square,
    unique_handle,
)

Caller = tuple[Member, str]
Body = dict[str, Any]


def post_raw(client: TestClient, token: str, raw: str | bytes, url: str = "/v1/members") -> Any:
    """POST text as JSON (NaN and Infinity literals included, which httpx's json= refuses)."""
    headers = {**auth(token), "Content-Type": "application/json"}
    return client.post(url, content=raw, headers=headers)


def count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Member)) or 0


def circle(n: int, radius_m: float = 400.0) -> dict[str, Any]:
    """A closed ring of ``n`` distinct vertices (n + 1 positions)."""
    dlat = radius_m / 111_320.0
    dlon = dlat / math.cos(math.radians(HELSINKI_LAT))
    ring = [
        [
            HELSINKI_LON + dlon * math.cos(2 * math.pi * i / n),
            HELSINKI_LAT + dlat * math.sin(2 * math.pi * i / n),
        ]
        for i in range(n)
    ]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


BOW_TIE = {
    "type": "Polygon",
    "coordinates": [
        [
            [HELSINKI_LON, HELSINKI_LAT],
            [HELSINKI_LON + 0.01, HELSINKI_LAT + 0.005],
            [HELSINKI_LON + 0.01, HELSINKI_LAT],
            [HELSINKI_LON, HELSINKI_LAT + 0.005],
            [HELSINKI_LON, HELSINKI_LAT],
        ]
    ],
}


def _set(path: str, value: Any) -> Callable[[Body], None]:
    """A body mutation setting a dotted path (list indexes as numbers)."""

    def mutate(body: Body) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _ring(body: Body) -> list[list[float]]:
    return body["home_zone"]["coordinates"][0]


def _unclosed(body: Body) -> None:
    _ring(body)[-1] = [HELSINKI_LON + 0.001, HELSINKI_LAT + 0.001]


def _hole(size_m: float) -> Callable[[Body], None]:
    def mutate(body: Body) -> None:
        hole = square(HELSINKI_LON, HELSINKI_LAT, size_m)["coordinates"][0][::-1]
        body["home_zone"]["coordinates"].append(hole)

    return mutate


def _far_hole(body: Body) -> None:
    hole = square(HELSINKI_LON + 0.1, HELSINKI_LAT, 50.0)["coordinates"][0][::-1]
    body["home_zone"]["coordinates"].append(hole)


# (case id, mutation of a valid full body, error class, text the detail must contain)
BAD_INPUT: list[tuple[str, Callable[[Body], None], str, str]] = [
    (
        "lon_out_of_range",
        _set("home_zone.coordinates.0.1", [181.0, 60.17]),
        "ValidationError",
        "home_zone.coordinates.0.1.0",
    ),
    (
        "lat_out_of_range",
        _set("home_zone.coordinates.0.1", [24.9, -90.5]),
        "ValidationError",
        "home_zone.coordinates.0.1.1",
    ),
    (
        "huge_number",
        _set("home_zone.coordinates.0.1", [1e308, 60.17]),
        "ValidationError",
        "home_zone.coordinates.0.1.0",
    ),
    (
        "string_coordinate",
        _set("home_zone.coordinates.0.1", ["24.9", 60.17]),
        "ValidationError",
        "home_zone.coordinates.0.1.0",
    ),
    (
        "three_d_position",
        _set("home_zone.coordinates.0.1", [24.9, 60.17, 10.0]),
        "ValidationError",
        "home_zone.coordinates.0.1",
    ),
    ("unclosed_ring", _unclosed, "ValidationError", "home_zone: Polygon: ring 0 is not closed"),
    ("bow_tie", _set("home_zone", BOW_TIE), "ValidationError", "self-intersection"),
    (
        "too_few_positions",
        _set("home_zone.coordinates", [[[24.9, 60.1], [24.91, 60.1], [24.9, 60.1]]]),
        "ValidationError",
        "home_zone",
    ),
    ("hole_outside_shell", _far_hole, "ValidationError", "hole lies outside shell"),
    ("hole_leaves_too_little_area", _hole(290.0), "InvalidGeometry", "home_zone: area is"),
    (
        "home_zone_too_small",
        _set("home_zone", square(HELSINKI_LON, HELSINKI_LAT, 150.0)),
        "InvalidGeometry",
        "home_zone: area is 22,",
    ),
    (
        "home_zone_too_large",
        _set("home_zone", square(HELSINKI_LON, HELSINKI_LAT, 5100.0)),
        "InvalidGeometry",
        "at most 25,000,000 m²",
    ),
    (
        "work_zone_too_small",
        _set("zones.0.area", square(HELSINKI_LON, HELSINKI_LAT, 100.0)),
        "InvalidGeometry",
        "zones.0.area: area is",
    ),
    (
        "too_many_vertices",
        _set("home_zone", circle(2001)),
        "InvalidGeometry",
        "home_zone: 2002 vertices; at most 2000",
    ),
    (
        "route_too_long",
        _set("routes.0.path", line((24.9, 60.1), (24.9, 61.1))),
        "InvalidGeometry",
        "routes.0.path: length is",
    ),
    (
        "route_single_point",
        _set("routes.0.path", line((24.9, 60.1))),
        "ValidationError",
        "routes.0.path.coordinates",
    ),
    (
        "route_one_place_twice",
        _set("routes.0.path", line((24.9, 60.1), (24.9, 60.1))),
        "ValidationError",
        "2 distinct",
    ),
    (
        "wrong_geometry_type",
        _set("home_zone", {"type": "Point", "coordinates": [24.9, 60.1]}),
        "ValidationError",
        "home_zone.type",
    ),
    (
        "polygon_as_route",
        _set("routes.0.path", square(24.9, 60.1, 300.0)),
        "ValidationError",
        "routes.0.path",
    ),
    (
        "geometry_not_an_object",
        _set("home_zone", "POLYGON((0 0,1 0,1 1,0 0))"),
        "ValidationError",
        "home_zone",
    ),
    (
        "equal_start_and_end",
        _set("zones.0.end", "09:00"),
        "ValidationError",
        "zones.0: start and end are equal",
    ),
    (
        "quiet_hours_empty",
        _set("quiet_hours", {"start": "06:00", "end": "06:00"}),
        "ValidationError",
        "quiet_hours: start and end are equal",
    ),
    (
        "hour_24",
        _set("zones.0.start", "24:00"),
        "ValidationError",
        "zones.0.start: expected a local time",
    ),
    ("single_digit_hour", _set("routes.0.start", "8:15"), "ValidationError", "routes.0.start"),
    ("seconds_in_time", _set("routes.0.end", "08:50:00"), "ValidationError", "routes.0.end"),
    ("empty_days", _set("zones.0.days", []), "ValidationError", "zones.0.days"),
    (
        "repeated_day",
        _set("zones.0.days", ["mon", "mon"]),
        "ValidationError",
        "zones.0.days: days must not repeat",
    ),
    ("unknown_day", _set("routes.1.days", ["monday"]), "ValidationError", "routes.1.days.0"),
    (
        "unknown_field",
        _set("password", "hunter2"),
        "ValidationError",
        "password: Extra inputs are not permitted",
    ),
    ("unknown_nested_field", _set("zones.0.colour", "red"), "ValidationError", "zones.0.colour"),
    (
        "unknown_geometry_member",
        _set("home_zone.crs", {"type": "name"}),
        "ValidationError",
        "home_zone.crs",
    ),
    ("unknown_role", _set("roles", ["admin"]), "ValidationError", "roles.0"),
    (
        "repeated_role",
        _set("roles", ["responder", "responder"]),
        "ValidationError",
        "roles: roles must not repeat",
    ),
    ("unknown_mode", _set("mode", "teleport"), "ValidationError", "mode"),
    ("negative_speed", _set("speed_mps", -1.0), "ValidationError", "speed_mps"),
    ("bad_email", _set("contact.email", "not-an-address"), "ValidationError", "contact.email"),
    ("bad_phone", _set("contact.phone", "0401234567"), "ValidationError", "contact.phone"),
    (
        "bad_webhook_scheme",
        _set("contact.webhook_url", "ftp://example.org/x"),
        "ValidationError",
        "contact.webhook_url",
    ),
    ("bad_handle", _set("handle", "rosa smith!"), "ValidationError", "handle"),
    ("too_many_zones", lambda b: b.update(zones=b["zones"] * 21), "ValidationError", "zones"),
    ("available_not_bool", _set("available", "maybe"), "ValidationError", "available"),
]


class TestCreateRefusesBadInput:
    @pytest.mark.parametrize(
        ("mutate", "error", "needle"),
        [case[1:] for case in BAD_INPUT],
        ids=[case[0] for case in BAD_INPUT],
    )
    def test_is_422_naming_the_field_and_nothing_is_stored(
        self,
        client: TestClient,
        coordinator: Caller,
        db: Session,
        mutate: Callable[[Body], None],
        error: str,
        needle: str,
    ) -> None:
        body = full_member_body()
        mutate(body)
        before = count(db)
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 422, r.text
        answer = ErrorBody.model_validate(r.json())
        assert answer.error == error
        assert needle in answer.detail
        assert count(db) == before

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
    def test_non_finite_json_literals_are_422(
        self, client: TestClient, coordinator: Caller, db: Session, literal: str
    ) -> None:
        raw = json.dumps(member_body()).replace("24.9", literal, 1)
        assert literal in raw
        before = count(db)
        r = post_raw(client, coordinator[1], raw)
        assert r.status_code == 422
        assert ErrorBody.model_validate(r.json()).detail
        assert count(db) == before

    @pytest.mark.parametrize("literal", ["1e999", "-1e999", "1" + "0" * 400])
    def test_numbers_too_big_for_a_float_are_422_naming_the_field(
        self, client: TestClient, coordinator: Caller, db: Session, literal: str
    ) -> None:
        raw = json.dumps(member_body()).replace("24.9", literal, 1)
        before = count(db)
        r = post_raw(client, coordinator[1], raw)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("home_zone.coordinates.0.0.0:")
        assert count(db) == before

    @pytest.mark.parametrize(
        "raw",
        [b"{", b"[]", b"null", b'"member"', b"[" * 50_000 + b"]" * 50_000, b"\xff\xfe"],
        ids=["truncated", "array", "null", "string", "deeply_nested", "not_utf8"],
    )
    def test_malformed_json_is_a_client_error(
        self, client: TestClient, coordinator: Caller, raw: bytes
    ) -> None:
        r = client.post(
            "/v1/members",
            content=raw,
            headers={**auth(coordinator[1]), "Content-Type": "application/json"},
        )
        assert r.status_code in (400, 422)
        ErrorBody.model_validate(r.json())

    def test_body_over_one_megabyte_is_413(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        body = member_body(handle=unique_handle())
        body["zones"] = [{"name": "x" * 1_100_000}]
        before = count(db)
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 413
        assert ErrorBody.model_validate(r.json()).error == "PayloadTooLarge"
        assert count(db) == before

    def test_streamed_body_over_the_limit_is_413(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        def chunks():  # type: ignore[no-untyped-def]
            yield b'{"handle": "' + b"a" * 600_000
            yield b"b" * 600_000 + b'"}'

        r = client.post(
            "/v1/members",
            content=chunks(),
            headers={**auth(coordinator[1]), "Content-Type": "application/json"},
        )
        assert r.status_code == 413


class TestCreateAcceptsEdgeCases:
    def _post(self, client: TestClient, token: str, body: Body) -> MemberCreated:
        r = client.post("/v1/members", json=body, headers=auth(token))
        assert r.status_code == 201, r.text
        return MemberCreated.model_validate(r.json())

    def test_windows_may_cross_midnight(self, client: TestClient, coordinator: Caller) -> None:
        body = full_member_body()
        body["zones"][0].update(start="22:00", end="06:00")
        body["quiet_hours"] = {"start": "23:30", "end": "00:15"}
        created = self._post(client, coordinator[1], body)
        assert created.member.zones[0].start.isoformat() == "22:00:00"
        assert created.member.quiet_hours is not None

    def test_polygon_with_a_hole_is_stored_with_the_hole(
        self, client: TestClient, coordinator: Caller, db: Session
    ) -> None:
        body = member_body(side_m=600.0)
        _hole(100.0)(body)
        created = self._post(client, coordinator[1], body)
        assert created.member.home_zone is not None
        assert len(created.member.home_zone.coordinates) == 2
        rings = db.execute(
            text("SELECT ST_NumInteriorRings(home_zone) FROM member WHERE id = :id"),
            {"id": created.member.id},
        ).scalar_one()
        assert rings == 1

    def test_clockwise_exterior_is_accepted_and_returned_counterclockwise(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        body = member_body()
        body["home_zone"]["coordinates"][0].reverse()
        created = self._post(client, coordinator[1], body)
        from shapely.geometry import LinearRing

        assert created.member.home_zone is not None
        assert LinearRing(created.member.home_zone.coordinates[0]).is_ccw

    def test_exactly_2000_vertices_is_allowed(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        created = self._post(client, coordinator[1], member_body(home_zone=circle(1999)))
        assert created.member.home_zone is not None
        assert len(created.member.home_zone.coordinates[0]) == 2000

    def test_days_come_back_in_week_order(self, client: TestClient, coordinator: Caller) -> None:
        body = full_member_body()
        body["zones"][0]["days"] = ["sun", "mon", "wed"]
        assert self._post(client, coordinator[1], body).member.zones[0].days == [
            "mon",
            "wed",
            "sun",
        ]

    def test_ints_are_accepted_as_coordinates(
        self, coordinator: Caller, settings: Any, engine: Any, session_factory: Any
    ) -> None:
        """No integer meridian crosses the small Helsinki graph: served here without graphs."""
        from api.graphs import GraphStore
        from api.main import create_app

        app = create_app(
            settings, engine=engine, session_factory=session_factory, graphs=GraphStore()
        )
        client = TestClient(app, raise_server_exceptions=False)
        body = member_body(
            home_zone={
                "type": "Polygon",
                "coordinates": [[[25, 60], [25.01, 60], [25.01, 60.005], [25, 60.005], [25, 60]]],
            }
        )
        self._post(client, coordinator[1], body)


class TestDatabaseBackstop:
    def test_postgis_would_refuse_what_the_api_refuses_first(self, db: Session) -> None:
        """The CHECK (ST_IsValid) constraint holds even for writes that bypass the API."""
        wkt = "POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))"
        with pytest.raises(IntegrityError, match="ck_member_home_zone_valid"), db.begin_nested():
            db.execute(
                text(
                    "INSERT INTO member (id, handle, roles, home_zone) VALUES "
                    "(gen_random_uuid(), :h, '{}', ST_GeomFromText(:wkt, 4326))"
                ),
                {"h": unique_handle(), "wkt": wkt},
            )

    def test_a_geometry_only_postgis_rejects_is_422_not_500(
        self, db: Session, settings: Any, graphs: Any
    ) -> None:
        """If GEOS versions ever disagree, the CHECK constraint's refusal still becomes a 422."""
        from api.members import service
        from api.members.schemas import MemberCreate
        from api.types import Polygon
        from geo.errors import InvalidGeometry

        d = 0.01
        lopsided_bow_tie = Polygon.model_construct(
            type="Polygon",
            coordinates=[
                [
                    (HELSINKI_LON, HELSINKI_LAT),
                    (HELSINKI_LON + 2 * d, HELSINKI_LAT + d),
                    (HELSINKI_LON + 2 * d, HELSINKI_LAT),
                    (HELSINKI_LON, HELSINKI_LAT + 0.3 * d),
                    (HELSINKI_LON, HELSINKI_LAT),
                ]
            ],
        )
        data = MemberCreate.model_construct(
            handle=unique_handle(),
            roles=["responder"],
            mode="walk",
            speed_mps=None,
            home_zone=lopsided_bow_tie,
            zones=[],
            routes=[],
            available=True,
            quiet_hours=None,
            contact=None,
        )
        before = count(db)
        with db.begin_nested(), pytest.raises(InvalidGeometry, match="home_zone: PostGIS"):
            service.create_member(db, settings, data, actor=None, graphs=graphs)
        assert count(db) == before

    def test_responder_without_home_zone_is_refused_by_the_database(self, db: Session) -> None:
        with pytest.raises(IntegrityError, match="home_zone_for_field_roles"), db.begin_nested():
            db.execute(
                text(
                    "INSERT INTO member (id, handle, roles) "
                    "VALUES (gen_random_uuid(), :h, '{responder}')"
                ),
                {"h": unique_handle()},
            )


class TestSchemaSaysWhatIsRefused:
    """Found by tests/api/test_fuzz_openapi.py: the OpenAPI schema and the answers agree."""

    def test_email_pattern_is_in_the_request_schema(self, client: TestClient) -> None:
        # The pattern sat after the NUL check and dropped out of Contact-Input: clients and
        # generators were told "" is an e-mail address, and got a 422 for it.
        components = client.get("/openapi.json").json()["components"]["schemas"]
        contact = components["MemberCreate"]["properties"]["contact"]["anyOf"][0]["$ref"]
        email = components[contact.rsplit("/", 1)[1]]["properties"]["email"]["anyOf"][0]
        assert email["pattern"] == r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

    def test_patch_schema_allows_null_only_where_null_clears(self, client: TestClient) -> None:
        props = client.get("/openapi.json").json()["components"]["schemas"]["MemberUpdate"]
        takes_null = {
            name
            for name, prop in props["properties"].items()
            if {"type": "null"} in prop.get("anyOf", [])
        }
        assert takes_null == {"speed_mps", "home_zone", "quiet_hours", "contact"}

    def test_null_where_the_schema_forbids_it_is_422(
        self, client: TestClient, responder: Caller
    ) -> None:
        r = client.patch("/v1/members/me", json={"available": None}, headers=auth(responder[1]))
        assert r.status_code == 422, r.text
        assert "available" in ErrorBody.model_validate(r.json()).detail

    @pytest.mark.parametrize(
        ("method", "url"),
        [
            ("POST", "/v1/members"),
            ("PATCH", "/v1/members/me"),
            ("POST", "/v1/alerts"),
            ("PUT", "/v1/members/me/location"),
        ],
    )
    def test_body_that_is_not_text_is_422_not_an_undocumented_400(
        self, client: TestClient, coordinator: Caller, method: str, url: str
    ) -> None:
        # Fuzzer's reproduction: curl -X POST -H 'Content-Type: application/json' -d $'\x07\xe9h'
        headers = {**auth(coordinator[1]), "Content-Type": "application/json"}
        r = client.request(method, url, content=b"\x07\xe9h", headers=headers)
        assert r.status_code == 422, r.text
        answer = ErrorBody.model_validate(r.json())
        assert answer.error == "ValidationError"
        assert answer.detail.startswith("body: ")

    @pytest.mark.parametrize(
        ("url", "allow"),
        [
            ("/v1/members/me", "DELETE, GET, HEAD, PATCH"),
            ("/v1/members/me/token", "DELETE, POST"),
            ("/v1/alerts", "GET, HEAD, POST"),
        ],
    )
    def test_405_allow_lists_every_method_of_the_path(
        self, client: TestClient, coordinator: Caller, url: str, allow: str
    ) -> None:
        # Starlette answered with the methods of the path's first route only (Allow: GET).
        r = client.options(url, headers=auth(coordinator[1]))
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == allow


# --- hypothesis: generated hostile geometry ---------------------------------------------------

number = st.one_of(
    st.floats(min_value=-200, max_value=200, allow_nan=False),
    st.floats(min_value=HELSINKI_LAT - 0.01, max_value=HELSINKI_LAT + 0.01),
    st.floats(min_value=HELSINKI_LON - 0.01, max_value=HELSINKI_LON + 0.01),
    st.sampled_from([1e308, -1e308, 1e30, 180.0000001, -90.0000001, 0, -0.0, math.nan, math.inf]),
    st.integers(min_value=-(10**30), max_value=10**30),
)
junk = st.recursive(
    st.none() | st.booleans() | st.text(max_size=4) | number,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
position = st.one_of(
    st.tuples(number, number).map(list),
    st.lists(number, max_size=4),
    junk,
)


@st.composite
def local_ring(draw: st.DrawFn) -> list[list[float]]:
    """A ring near Helsinki: random quadrilaterals (often bow-ties) of random size."""
    size = draw(st.floats(min_value=1e-5, max_value=0.08))
    n = draw(st.integers(min_value=3, max_value=8))
    pts = [
        [
            HELSINKI_LON + draw(st.floats(min_value=-1, max_value=1)) * size,
            HELSINKI_LAT + draw(st.floats(min_value=-1, max_value=1)) * size / 2,
        ]
        for _ in range(n)
    ]
    if draw(st.booleans()):
        pts.append(pts[0])
    return pts


@st.composite
def local_square(draw: st.DrawFn) -> list[list[float]]:
    """A square near Helsinki of 30 m to 8 km a side (around both area limits), maybe jittered."""
    side_m = 10 ** draw(st.floats(min_value=1.5, max_value=3.9))
    ring = square(HELSINKI_LON, HELSINKI_LAT, side_m)["coordinates"][0]
    if draw(st.booleans()):
        i = draw(st.integers(min_value=0, max_value=3))
        ring[i] = [ring[i][0] + draw(st.floats(-0.02, 0.02)), ring[i][1]]
        ring[-1] = ring[0]
    return ring


ring = st.one_of(local_square(), local_square(), local_ring(), st.lists(position, max_size=8), junk)


@st.composite
def polygon_like(draw: st.DrawFn) -> Any:
    kind = draw(
        st.sampled_from(
            ["Polygon", "Polygon", "Polygon", "LineString", "Point", "polygon", 3, None]
        )
    )
    rings = draw(st.lists(ring, min_size=0, max_size=3) | st.tuples(local_square()).map(list))
    geom: dict[str, Any] = {"type": kind, "coordinates": rings}
    if draw(st.integers(0, 9)) == 0:
        geom[draw(st.text(min_size=1, max_size=4))] = draw(junk)
    return draw(st.one_of(st.just(geom), junk)) if draw(st.integers(0, 7)) == 0 else geom


@st.composite
def line_like(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        start = [HELSINKI_LON, HELSINKI_LAT]
        step = 10 ** draw(st.floats(min_value=-5, max_value=0.2))
        n = draw(st.integers(min_value=1, max_value=5))
        coords = [[start[0], start[1] + step * i] for i in range(n)]
    else:
        coords = draw(st.lists(position, max_size=6))
    return {
        "type": draw(st.sampled_from(["LineString", "LineString", "Polygon"])),
        "coordinates": coords,
    }


hostile_settings = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class TestHostileGeometry:
    def _check(self, client: TestClient, db: Session, token: str, body: Body) -> None:
        before = count(db)
        r = post_raw(client, token, json.dumps(body))
        event(f"status {r.status_code}")
        assert r.status_code in (201, 422), r.text
        ErrorBody.model_validate(
            r.json()
        ) if r.status_code == 422 else MemberCreated.model_validate(r.json())
        if r.status_code == 422:
            assert count(db) == before
            assert r.json()["detail"]
            return
        assert count(db) == before + 1
        valid = db.execute(
            text(
                "SELECT bool_and(ST_IsValid(g)) FROM ("
                " SELECT home_zone AS g FROM member WHERE id = :id"
                " UNION ALL SELECT area FROM member_zone WHERE member_id = :id"
                " UNION ALL SELECT path FROM member_route WHERE member_id = :id) AS t"
            ),
            {"id": r.json()["member"]["id"]},
        ).scalar_one()
        assert valid in (True, None)

    @hostile_settings
    @given(home_zone=polygon_like())
    def test_hostile_home_zone_is_201_or_422(
        self, client: TestClient, coordinator: Caller, db: Session, home_zone: Any
    ) -> None:
        body = member_body(handle=unique_handle("h"))
        body["home_zone"] = home_zone
        self._check(client, db, coordinator[1], body)

    @hostile_settings
    @given(area=polygon_like(), path=line_like())
    def test_hostile_zone_and_route_are_201_or_422(
        self, client: TestClient, coordinator: Caller, db: Session, area: Any, path: Any
    ) -> None:
        body = copy.deepcopy(full_member_body(handle=unique_handle("z")))
        body["zones"][0]["area"] = area
        body["routes"][0]["path"] = path
        self._check(client, db, coordinator[1], body)

    @hostile_settings
    @given(name=st.text(max_size=70), email=st.text(max_size=20))
    def test_any_zone_name_and_email_text_is_201_or_422(
        self, client: TestClient, coordinator: Caller, db: Session, name: str, email: str
    ) -> None:
        # Includes U+0000, which PostgreSQL text cannot hold: a 422, never a 500.
        body = copy.deepcopy(full_member_body(handle=unique_handle("t")))
        body["zones"][0]["name"] = name
        body["contact"] = {"email": f"{email}@example.org"}
        self._check(client, db, coordinator[1], body)

    def test_nul_in_a_zone_name_is_422_naming_it(
        self, client: TestClient, coordinator: Caller
    ) -> None:
        body = copy.deepcopy(full_member_body(handle=unique_handle("n")))
        body["zones"][0]["name"] = "work\x00"
        r = client.post("/v1/members", json=body, headers=auth(coordinator[1]))
        assert r.status_code == 422, r.text
        assert "NUL" in r.text and "name" in r.text

    @hostile_settings
    @given(home_zone=polygon_like())
    def test_hostile_patch_is_200_or_422_and_422_changes_nothing(
        self, client: TestClient, responder: Caller, db: Session, home_zone: Any
    ) -> None:
        _, token = responder
        before = client.get("/v1/members/me", headers=auth(token)).json()
        r = client.patch(
            "/v1/members/me",
            content=json.dumps({"home_zone": home_zone}),
            headers={**auth(token), "Content-Type": "application/json"},
        )
        assert r.status_code in (200, 422), r.text
        if r.status_code == 422:
            ErrorBody.model_validate(r.json())
            after = client.get("/v1/members/me", headers=auth(token)).json()
            assert after == before


class TestSharedTypes:
    """api.types, used by every domain: times of day, windows, days, points."""

    def test_time_window_contains_across_midnight(self) -> None:
        from datetime import time

        from api.types import TimeWindow

        night = TimeWindow.model_validate({"start": "22:00", "end": "06:30"})
        assert night.contains(time(23, 59)) and night.contains(time(0, 0))
        assert night.contains(time(22, 0)) and not night.contains(time(6, 30))
        assert not night.contains(time(12, 0))
        day = TimeWindow.model_validate({"start": "09:00", "end": "17:00"})
        assert day.contains(time(9, 0)) and not day.contains(time(17, 0))

    def test_time_of_day_serialises_as_hh_mm(self) -> None:
        from api.types import TimeWindow

        window = TimeWindow.model_validate({"start": "00:00", "end": "23:59"})
        assert window.model_dump(mode="json") == {"start": "00:00", "end": "23:59"}
        schema = TimeWindow.model_json_schema()["properties"]["start"]
        assert schema["type"] == "string" and "pattern" in schema

    def test_point_refuses_out_of_range_and_strings(self) -> None:
        from pydantic import ValidationError

        from api.types import Point

        assert Point.model_validate({"type": "Point", "coordinates": [24.9, 60.1]}).lat == 60.1
        for bad in ([190, 0], [0, -91], ["24.9", 60.1], [24.9], [True, 60.0]):
            with pytest.raises(ValidationError):
                Point.model_validate({"type": "Point", "coordinates": bad})
