"""Idempotency-Key retries (also concurrent, on committed data), the rate limit, and atomicity."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from api.alerts.models import Alert, AlertResponder
from api.notify.models import Delivery
from tests.alerts.helpers import count_rows, deliveries, post_alert, race


def body(site: Any, **extra: Any) -> dict[str, Any]:
    out = {"location": site.point(), "kind": "personal", "needed": 1}
    out.update(extra)
    return out


class TestIdempotency:
    def test_a_retry_returns_the_same_alert_and_notifies_no_one_again(
        self, api, db, site, crowd, make_member
    ):
        _, token = make_member()
        first = post_alert(api, token, body(site), key="same")
        sent = len(deliveries(db, first.json()["id"]))
        again = post_alert(api, token, body(site), key="same")
        assert first.status_code == 201
        assert again.status_code == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert count_rows(db, Alert) == 1
        assert len(deliveries(db, first.json()["id"])) == sent > 0

    def test_the_same_key_with_another_body_is_422(self, api, db, site, crowd, make_member):
        _, token = make_member()
        post_alert(api, token, body(site), key="same")
        res = post_alert(api, token, body(site, needed=2), key="same")
        assert res.status_code == 422
        assert res.json()["error"] == "IdempotencyKeyReused"
        assert count_rows(db, Alert) == 1

    def test_a_key_reused_a_day_later_raises_a_new_alert(
        self, api, db, site, crowd, make_member, clock
    ):
        _, token = make_member()
        first = post_alert(api, token, body(site), key="1")
        clock.advance(24 * 3600 - 1)
        assert post_alert(api, token, body(site), key="1").json()["id"] == first.json()["id"]
        clock.advance(1)
        later = post_alert(api, token, body(site, needed=2), key="1")
        assert later.status_code == 201
        assert later.json()["id"] != first.json()["id"]
        assert post_alert(api, token, body(site, needed=2), key="1").status_code == 200
        assert count_rows(db, Alert) == 2

    def test_keys_belong_to_their_requester(self, api, db, site, crowd, make_member):
        _, one = make_member()
        _, two = make_member()
        a = post_alert(api, one, body(site), key="shared")
        b = post_alert(api, two, body(site), key="shared")
        assert a.status_code == b.status_code == 201
        assert a.json()["id"] != b.json()["id"]


class TestRateLimit:
    def test_the_eleventh_alert_in_an_hour_is_429_until_the_oldest_leaves(
        self, api, db, site, clock, make_member
    ):
        _, token = make_member()
        for i in range(10):
            assert post_alert(api, token, body(site), key=f"k{i}").status_code == 201
            clock.advance(60)
        res = post_alert(api, token, body(site), key="k10")
        assert res.status_code == 429
        assert res.json()["error"] == "RateLimited"
        # The oldest alert was raised 600 s ago; it leaves the hour in 3000 s.
        assert res.headers["Retry-After"] == "3000"
        assert count_rows(db, Alert) == 10
        # A retry of an accepted alert is still answered.
        assert post_alert(api, token, body(site), key="k3").status_code == 200
        clock.advance(2999)
        assert post_alert(api, token, body(site), key="k10").status_code == 429
        clock.advance(1)
        assert post_alert(api, token, body(site), key="k10").status_code == 201

    def test_coordinator_exercises_are_exempt(self, api, site, clock, coordinator):
        _, token = coordinator
        for i in range(10):
            assert post_alert(api, token, body(site, exercise=True), key=f"x{i}").status_code == 201
        for i in range(10):
            assert post_alert(api, token, body(site), key=f"k{i}").status_code == 201
        assert post_alert(api, token, body(site), key="k10").status_code == 429
        assert post_alert(api, token, body(site, exercise=True), key="x10").status_code == 201


class TestOneTransaction:
    def test_a_failure_after_ranking_stores_nothing(self, api, db, site, place, make_member):
        # A real failure at the last step: the database refuses the outbox row of one member
        # of the first wave (a trigger inside the test's own, rolled-back transaction), after
        # the alert row and the ranking were written.
        nodes = site.nodes_by_time()
        victim, _ = place(site, nodes[10])
        place(site, nodes[20])
        db.execute(
            text(
                "CREATE FUNCTION pg_temp.refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.member_id = '{victim.id}' THEN RAISE EXCEPTION 'disk full'; "
                "END IF; RETURN NEW; END $$"
            )
        )
        db.execute(
            text(
                "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox "
                "FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_outbox()"
            )
        )
        db.commit()
        _, token = make_member()
        res = post_alert(api, token, body(site, needed=1))
        assert res.status_code == 500
        assert res.json()["error"] == "InternalError"
        assert count_rows(db, Alert) == 0
        assert count_rows(db, AlertResponder) == 0
        assert count_rows(db, Delivery) == 0


class TestCommitted:
    def test_the_201_means_alert_ranking_and_outbox_are_committed(self, committed, site, engine):
        client = TestClient(committed["app"], raise_server_exceptions=False)
        res = post_alert(client, committed["tokens"]["requester"], body(site, needed=1))
        assert res.status_code == 201
        with engine.connect() as conn:
            alert_id = res.json()["id"]
            params = {"id": alert_id}
            assert (
                conn.execute(text("SELECT count(*) FROM alert WHERE id = :id"), params).scalar()
                == 1
            )
            ranked = conn.execute(
                text("SELECT count(*) FROM alert_responder WHERE alert_id = :id"), params
            ).scalar()
            queued = conn.execute(
                text("SELECT count(*) FROM outbox WHERE alert_id = :id AND message_kind = 'alert'"),
                params,
            ).scalar()
        assert ranked == 5
        assert queued == 3

    def test_concurrent_retries_make_one_alert(self, committed, site, engine):
        app = committed["app"]
        token = committed["tokens"]["requester"]
        n = 8
        clients = [TestClient(app, raise_server_exceptions=False) for _ in range(n)]
        results = race(
            *(partial(post_alert, c, token, body(site, needed=1), key="storm") for c in clients)
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200] * (n - 1) + [201]
        assert len({r.json()["id"] for r in results}) == 1
        requester_id = committed["members"][0].id
        with committed["factory"]() as session:
            alerts = session.scalar(
                select(func.count()).select_from(Alert).where(Alert.requester_id == requester_id)
            )
            alert_id = results[0].json()["id"]
            queued = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.alert_id == alert_id)
            )
        assert alerts == 1
        assert queued == 3
