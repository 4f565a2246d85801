"""Trilateration: a member raising many alerts around another's home learns only rounded ETAs.

Real PostGIS and the real Helsinki walk graph. A requester raises as many personal alerts as
the rate limit lets it, at street nodes all around a responder's home zone; the responder
accepts some and declines the others. Everything the requester is answered is searched: its
views have exactly the documented fields, the only numbers in them are the requester's own
alert location, counts and the ETAs of those who accepted rounded up to ``ETA_STEP_S``; nobody
who declined or did not answer appears. The rate limit is the member's, whichever token
(rotated, replaced by a coordinator, or a second live one) it raises the alert with.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.alerts.models import AlertResponder
from api.alerts.schemas import ETA_STEP_S, AcceptedResponder, AlertRequesterView, rounded_eta_s
from api.members import service as members_service
from tests.alerts.helpers import Site, post_alert
from tests.api.factories import auth, square

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def _numbers(text: str) -> set[float]:
    # Numbers outside uuids and timestamps (those are ids and the clock, not places).
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "", text)
    text = re.sub(r"\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?", "", text)
    return {float(n) for n in NUMBER.findall(text)}


def _ring(site: Site, home: int, n: int) -> list[int]:
    """``n`` street nodes 150-700 m around the home node, spread over the compass."""
    import math

    graph = site.graph
    hx, hy = float(graph.lon[home]), float(graph.lat[home])
    coslat = math.cos(math.radians(hy))
    by_sector: dict[int, int] = {}
    for node in site.nodes_by_time():
        dx = (float(graph.lon[node]) - hx) * 111_320 * coslat
        dy = (float(graph.lat[node]) - hy) * 111_320
        d = math.hypot(dx, dy)
        if 150 <= d <= 700:
            by_sector.setdefault(int((math.degrees(math.atan2(dy, dx)) + 180) // (360 / n)), node)
    picks = list(by_sector.values())
    assert len(picks) >= n // 2, "not enough nodes around the home"
    return (picks * 2)[:n]


class TestTrilateration:
    def test_many_alerts_around_a_home_reveal_only_rounded_etas_of_acceptances(
        self, api: TestClient, db: Session, site: Site, place: Any, make_member: Any, settings: Any
    ) -> None:
        home = site.nodes_by_time()[40]
        target, target_token = place(site, home)
        _, other_token = place(site, site.nodes_by_time()[60])
        _, requester_token = make_member(roles=(), home_zone=square(site.lon, site.lat, 300.0))
        answered: list[str] = []
        rounded_seen = 0
        for i, node in enumerate(_ring(site, home, settings.alerts_per_hour)):
            location = [float(site.graph.lon[node]), float(site.graph.lat[node])]
            body = {
                "location": {"type": "Point", "coordinates": location},
                "kind": "personal",
                "needed": 1,
            }
            raised = post_alert(api, requester_token, body, key=f"tri-{i}")
            assert raised.status_code == 201, raised.text
            alert_id = raised.json()["id"]
            answers = {target.id: "accept" if i % 2 == 0 else "decline"}
            r = api.post(
                f"/v1/alerts/{alert_id}/responses",
                json={"answer": answers[target.id]},
                headers=auth(target_token),
            )
            assert r.status_code == 200, r.text
            # The other responder, if notified, declines: it must not be named either.
            api.post(
                f"/v1/alerts/{alert_id}/responses",
                json={"answer": "decline"},
                headers=auth(other_token),
            )
            view = api.get(f"/v1/alerts/{alert_id}", headers=auth(requester_token))
            assert view.status_code == 200, view.text
            answered += [raised.text, view.text, json.dumps(dict(view.headers))]
            data = view.json()
            parsed = AlertRequesterView.model_validate(data)
            assert parsed.view == "requester"
            assert set(data) == set(AlertRequesterView.model_fields)
            assert all(set(a) == set(AcceptedResponder.model_fields) for a in data["accepted"])
            stored = db.scalars(
                select(AlertResponder)
                .where(AlertResponder.alert_id == parsed.id)
                .execution_options(populate_existing=True)
            ).all()
            accepted = {r.member_id: r.eta_s for r in stored if r.state == "accepted"}
            assert set(accepted) == ({target.id} if i % 2 == 0 else set())
            if i % 2 == 0:
                (shown,) = parsed.accepted
                assert shown.handle == target.handle
                assert shown.eta_s == rounded_eta_s(accepted[target.id])
                assert shown.eta_s % ETA_STEP_S == 0
                rounded_seen += shown.eta_s != accepted[target.id]
            else:
                assert parsed.accepted == []
            # The only numbers: the requester's own location, counts and the rounded ETA.
            allowed = {*location, parsed.needed, parsed.notified_count}
            allowed |= {a.eta_s for a in parsed.accepted}
            assert _numbers(view.text) <= allowed, view.text
            closed = api.post(f"/v1/alerts/{alert_id}/close", headers=auth(requester_token))
            assert closed.status_code == 200, closed.text
            answered.append(closed.text)
        # The ETAs were really rounded (a true ETA is almost never a whole step).
        assert rounded_seen >= 1
        # The home zone's own vertices and node never appear in what the requester was told.
        home_xy = {float(site.graph.lon[home]), float(site.graph.lat[home])}
        corners = {
            c
            for p in square(float(site.graph.lon[home]), float(site.graph.lat[home]), 220.0)[
                "coordinates"
            ][0]
            for c in p
        }
        everything = _numbers("\n".join(answered))
        assert not (everything & (home_xy | corners))
        # The limit is reached: the next alert is refused whatever the location.
        body = {"location": site.point(), "kind": "personal", "needed": 1}
        refused = post_alert(api, requester_token, body, key="tri-over")
        assert refused.status_code == 429, refused.text
        assert _numbers(refused.text) <= {float(settings.alerts_per_hour), *_retry(refused)}


def _retry(answer: Any) -> set[float]:
    return {float(answer.headers["retry-after"])}


class TestRateLimitAcrossTokens:
    def test_the_limit_is_the_members_whatever_token_raises(
        self,
        api: TestClient,
        db: Session,
        site: Site,
        make_member: Any,
        coordinator: Any,
        clock: Any,
        settings: Any,
    ) -> None:
        member, token_a = make_member(roles=(), home_zone=square(site.lon, site.lat, 300.0))
        body = {"location": site.point(), "kind": "personal", "needed": 1}
        limit = settings.alerts_per_hour
        half = limit // 2
        for i in range(half):
            assert post_alert(api, token_a, body, key=f"a{i}").status_code == 201
        # Rotate through the token route: the old token stops, the count does not restart.
        rotated = api.post("/v1/members/me/token", headers=auth(token_a))
        assert rotated.status_code == 201, rotated.text
        token_b = rotated.json()["token"]
        assert post_alert(api, token_a, body, key="a-old").status_code == 401
        for i in range(half, limit):
            assert post_alert(api, token_b, body, key=f"b{i}").status_code == 201
        assert post_alert(api, token_b, body, key="b-over").status_code == 429
        # A coordinator replacing every token of the member: still the member's hour.
        replaced = api.post(f"/v1/members/{member.id}/token", headers=auth(coordinator[1]))
        assert replaced.status_code == 201, replaced.text
        token_c = replaced.json()["token"]
        assert post_alert(api, token_c, body, key="c-over").status_code == 429
        # Two tokens live at once (e.g. two devices): one hour for both.
        token_d = members_service.issue_token(db, member)
        db.commit()
        for token, key in ((token_c, "c-again"), (token_d, "d-over")):
            r = post_alert(api, token, body, key=key)
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) >= 1
        # Other idempotency keys, other kinds: all counted for the member.
        mass = {**body, "kind": "mass"}
        assert post_alert(api, token_d, mass, key="d-mass").status_code == 429
        # After the hour, the member may raise again, from either token.
        clock.advance(3601)
        assert post_alert(api, token_d, body, key="d-later").status_code == 201
