"""Canary leak test: a member's places appear only in its own reads and coordinators' reads of it.

The canary has a home zone, a scheduled zone, a route and a live location, each at its own
distinctive spot 600-1,500 m from where a mass alert is raised (so it is notified and accepts).
A coordinator then publishes a buddy group of the canary and a member walking its route (the
fellow responder, a defence volunteer, its point contact), texts the group and sends a rally
that reaches the canary. Every operation of the OpenAPI document (discovered, so a route added
later is covered), plus /metrics and /openapi.json, is called as anonymous, another member, the
fellow, the requester, a coordinator and the canary itself, with the real ids of the canary,
the alert, the group and an unpublished proposal in the path, and a valid body for the group,
text and rally routes; mutations run in a savepoint rolled back after them. The outbox
worker then tries to deliver (its receiver is closed, so it logs failures). Every answer body
and header and every log line of the server and worker is searched for a coordinate pair within
50 m of one of the canary's places, at whatever precision it is printed.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from api.logs import RedactingFormatter
from api.notify.worker import OutboxWorker
from tests.alerts.helpers import Site, post_alert
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, auth, line, square

NUMBER = re.compile(r"-?\d+\.\d+")
NEAR_M = 50.0

# Answers drawn from the loaded street graph alone (OSM data, the same whatever the members):
# a street's coordinates near a canary's home are not the home. Everything else is searched.
GRAPH_ONLY = {("GET", "/v1/coverage/streets")}


def without_h3_geometry(text: str) -> str:
    """The answer less each feature geometry that is exactly its own ``h3`` cell's boundary or
    centre: the fixed H3 grid, not a member's place. Any other coordinate stays to be searched.
    """
    import h3

    try:
        body = json.loads(text)
    except ValueError:
        return text
    if not isinstance(body, dict) or not isinstance(body.get("features"), list):
        return text
    for feature in body["features"]:
        cell = (feature.get("properties") or {}).get("h3")
        geometry = feature.get("geometry") or {}
        if not isinstance(cell, str):
            continue
        lat, lon = h3.cell_to_latlng(cell)
        ring = [[lo, la] for la, lo in h3.cell_to_boundary(cell)]
        coords = geometry.get("coordinates")
        if (geometry.get("type") == "Point" and _close(coords, [lon, lat])) or (
            geometry.get("type") == "Polygon" and _close(coords, [[*ring, ring[0]]])
        ):
            feature["geometry"] = None
    return json.dumps(body)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return isinstance(a, float | int) and isinstance(b, float | int) and abs(a - b) < 1e-9


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Equirectangular distance between (lon, lat) points: exact enough at 50 m."""
    dx = math.radians(a[0] - b[0]) * math.cos(math.radians((a[1] + b[1]) / 2))
    dy = math.radians(a[1] - b[1])
    return 6_371_000.0 * math.hypot(dx, dy)


def leaks(text: str, places: list[tuple[float, float]]) -> list[str]:
    """Coordinate pairs in ``text`` (either order, adjacent numbers) within NEAR_M of a place."""
    numbers = [float(n) for n in NUMBER.findall(text)]
    found = []
    for a, b in itertools.pairwise(numbers):
        for lon, lat in ((a, b), (b, a)):
            if -180 <= lon <= 180 and -90 <= lat <= 90:
                near = [p for p in places if distance_m((lon, lat), p) <= NEAR_M]
                if near:
                    found.append(f"{lon},{lat} ~ {near[0]}")
    return found


def _node_at(site: Site, low_m: float, high_m: float, skip: int = 0) -> tuple[float, float]:
    graph = site.graph
    here = (site.lon, site.lat)
    # Away from the fixtures' default home zone too (coordinators' own, around the centre).
    centre = (HELSINKI_LON, HELSINKI_LAT)
    points = [(float(graph.lon[n]), float(graph.lat[n])) for n in site.nodes_by_time()]
    picks = [
        p for p in points if low_m <= distance_m(p, here) <= high_m and distance_m(p, centre) > 700
    ]
    assert len(picks) > skip
    return picks[skip]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The server's and worker's lines (httpx is the test client here, not ern).
        if record.name.startswith(("ern", "api", "uvicorn")):
            self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Any:
    handler = _Lines()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(old)


# Groups of two at least: the canary and the buddy who walks its route.
BUILD = {"min_size": 2}


def rally_body(site: Site, clock: Any) -> dict[str, Any]:
    """A rally at the alert's site, meant an hour ago, reaching those usually within 30 min."""
    at = (clock.now() - timedelta(hours=1)).isoformat()
    return {"location": site.point(), "at": at, "minutes": 30, "text": "Thank you all"}


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: ids.get(m.group(1), str(uuid.uuid4())), path)


def gather_around(
    api: TestClient,
    make_member: Any,
    coord_token: str,
    canary_id: str,
    *,
    contact_id: str,
    route: dict[str, Any],
    site: Site,
    clock: Any,
) -> dict[str, str]:
    """Put the canary where others meet it before the sweep: a published buddy group with a
    member walking its very route and ``contact_id`` (the only defence volunteer) as its point
    contact, a group text and a rally near it, and a second proposal left unpublished (for the
    sweep's publish). Returns those path ids and the buddy's.
    """
    week = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    buddy, _ = make_member(
        contact={"webhook_url": "http://127.0.0.1:9/hook", "email": "buddy@example.org"},
        share_with_group=["email"],
        routes=[{"path": route, "days": week, "start": "00:00", "end": "23:59"}],
    )
    coord = auth(coord_token)
    built = api.post("/v1/groups/build", json=BUILD, headers=coord)
    assert built.status_code == 201, built.text
    published = api.post(
        f"/v1/groups/proposals/{built.json()['proposal_id']}/publish", headers=coord
    )
    assert published.status_code == 200, published.text
    [group] = [g for g in published.json()["items"] if canary_id in {m["id"] for m in g["members"]}]
    assert str(buddy.id) in {m["id"] for m in group["members"]}, group
    assert (group["point_contact"] or {}).get("id") == contact_id, group
    unpublished = api.post("/v1/groups/build", json=BUILD, headers=coord)
    assert unpublished.status_code == 201, unpublished.text
    text = api.post(
        f"/v1/groups/{group['id']}/messages",
        json={"text": "meet at 6"},
        headers={**coord, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert text.status_code == 201, text.text
    rally = api.post(
        "/v1/rallies",
        json=rally_body(site, clock),
        headers={**coord, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert rally.status_code == 201 and rally.json()["sent_count"] >= 1, rally.text
    return {
        "group_id": group["id"],
        "proposal_id": unpublished.json()["proposal_id"],
        "buddy_id": str(buddy.id),
    }


def bodies_for(ids: dict[str, str], *, site: Site, clock: Any) -> dict[tuple[str, str], Any]:
    """Minimal valid bodies, so that the group, text and rally routes run as a coordinator
    rather than stop at 422; any other mutation gets ``{}``."""
    return {
        ("POST", "/v1/groups/build"): BUILD,
        ("POST", "/v1/groups/{group_id}/members"): {"member_id": ids["buddy_id"]},
        ("POST", "/v1/groups/{group_id}/messages"): {"text": "meet at 6"},
        ("POST", "/v1/rallies"): rally_body(site, clock),
    }


@pytest.mark.slow
def test_a_members_places_leak_to_nobody_else(
    api: TestClient,
    connection: Connection,
    session_factory: Any,
    settings: Any,
    clock: Any,
    site: Site,
    place: Any,
    make_member: Any,
    coordinator: Any,
    log_lines: list[str],
) -> None:
    home = _node_at(site, 600, 900)
    work = _node_at(site, 900, 1500)
    live = _node_at(site, 600, 900, skip=3)
    start = _node_at(site, 600, 1500, skip=6)
    places = [home, work, live, start]
    assert all(distance_m(p, (site.lon, site.lat)) > 500 for p in places)
    canary, canary_token = make_member(
        roles=("responder",),
        lon=home[0],
        lat=home[1],
        side_m=220.0,
        contact={"webhook_url": "http://127.0.0.1:9/hook", "email": "canary@example.org"},
        share_with_group=["email"],
        zones=[
            {
                "name": "work",
                "area": square(work[0], work[1], 250.0),
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": "00:00",
                "end": "23:59",
            }
        ],
        routes=[
            {
                "path": line(start, work),
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": "00:00",
                "end": "23:59",
            }
        ],
    )
    # The zone's and route's own vertices are places too.
    places += [tuple(p) for p in square(home[0], home[1], 220.0)["coordinates"][0]]  # type: ignore[misc]
    places += [tuple(p) for p in square(work[0], work[1], 250.0)["coordinates"][0]]  # type: ignore[misc]
    canary_id = str(canary.id)
    here = {"location": {"type": "Point", "coordinates": list(live)}}
    assert (
        api.put("/v1/members/me/location", json=here, headers=auth(canary_token)).status_code == 200
    )

    fellow, fellow_token = place(site, site.nodes_by_time()[5], roles=("responder", "defense"))
    near_site = square(site.lon, site.lat, 300.0)
    _, other_token = make_member(roles=(), home_zone=near_site)
    _, requester_token = make_member(roles=(), home_zone=near_site)
    _, coord_token = coordinator
    body = {"location": site.point(), "kind": "mass", "needed": 2}
    raised = post_alert(api, requester_token, body, key="canary")
    assert raised.status_code == 201, raised.text
    alert_id = raised.json()["id"]
    for token in (canary_token, fellow_token):
        r = api.post(
            f"/v1/alerts/{alert_id}/responses", json={"answer": "accept"}, headers=auth(token)
        )
        assert r.status_code == 200, r.text

    gathered = gather_around(
        api,
        make_member,
        coord_token,
        canary_id,
        contact_id=str(fellow.id),
        route=line(start, work),
        site=site,
        clock=clock,
    )
    bodies = bodies_for(gathered, site=site, clock=clock)

    callers = {
        "anonymous": None,
        "other": other_token,
        "fellow": fellow_token,
        "requester": requester_token,
        "coordinator": coord_token,
        "canary": canary_token,
    }
    ids = {"member_id": canary_id, "alert_id": alert_id, **gathered}
    doc = api.get("/openapi.json").json()
    ops = [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    ops += [("GET", "/metrics"), ("GET", "/openapi.json")]
    # Reads first; mutations each in a savepoint rolled back after it.
    ops.sort(key=lambda op: op[0] != "GET")
    found: dict[str, list[str]] = {}
    status: dict[tuple[str, str, str], int] = {}
    calls = 0
    for method, path in ops:
        for who, token in callers.items():
            url = _fill(path, ids)
            headers = {**(auth(token) if token else {}), "Idempotency-Key": str(uuid.uuid4())}
            kwargs: dict[str, Any] = {"headers": headers}
            if method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = bodies.get((method, path), {})
            savepoint = connection.begin_nested()
            try:
                r = api.request(method, url, **kwargs)
            finally:
                if savepoint.is_active:
                    savepoint.rollback()
            calls += 1
            status[(who, method, path)] = r.status_code
            allowed = (
                who == "canary"
                or (who == "coordinator" and canary_id in url)
                or (method, path) in GRAPH_ONLY
            )
            body = without_h3_geometry(r.text) if path.startswith("/v1/coverage") else r.text
            text = body + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            hits = leaks(text, places)
            if allowed:
                continue
            if hits:
                found[f"{who} {method} {path} -> {r.status_code}"] = hits[:3]
    # The allowed reads do carry the places: the search would see a leak.
    own = api.get("/v1/members/me", headers=auth(canary_token))
    assert leaks(own.text, places)
    coord_read = api.get(f"/v1/members/{canary_id}", headers=auth(coord_token))
    assert leaks(coord_read.text, places)
    assert calls >= 6 * 15
    # The group, text and rally routes ran with real ids and bodies, not stopped at 404 or 422.
    reads = [("GET", "/v1/groups/{group_id}"), ("GET", "/v1/groups/{group_id}/roster")]
    ran = [("coordinator", *op) for op in [*bodies, *reads]]
    ran += [("fellow", *op) for op in [*reads, ("POST", "/v1/groups/{group_id}/messages")]]
    assert all(status.get(call) in (200, 201) for call in ran), {c: status.get(c) for c in ran}

    # The worker tries to deliver (the receiver is closed: failures are logged).
    worker = OutboxWorker(session_factory, settings, clock=clock, listen=False)
    try:
        worker.run_once()
    finally:
        worker.close()
    log_hits = [hit for text in log_lines for hit in leaks(text, places)]
    assert not found, found
    assert not log_hits, log_hits
