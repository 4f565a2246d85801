"""An alert's messages reach a real local webhook receiver through the notify outbox worker."""

from __future__ import annotations

from api.notify.worker import OutboxWorker
from tests.alerts.helpers import post_alert
from tests.api.factories import auth
from tests.notify.conftest import webhook  # noqa: F401  (fixture: a real local HTTP receiver)


class TestDelivery:
    def test_the_first_wave_then_the_stand_down_arrive_once_each(
        self,
        api,
        site,
        place,
        make_member,
        clock,
        session_factory,
        settings,
        webhook,  # noqa: F811
    ):
        nodes = site.nodes_by_time()
        people = [
            place(site, n, contact={"webhook_url": f"{webhook.url}/hook/{i}"})
            for i, n in enumerate(nodes[10:60:10])
        ]
        requester, token = make_member(roles=())
        body = {"location": site.point(), "kind": "personal", "needed": 1, "note": "help"}
        alert_id = post_alert(api, token, body).json()["id"]
        with OutboxWorker(session_factory, settings, clock=clock, listen=False) as outbox:
            outbox.run_once()
            first = [r.json() for r in webhook.requests]
            assert sorted(r.path for r in webhook.requests) == ["/hook/0", "/hook/1", "/hook/2"]
            for doc in first:
                assert doc["kind"] == "alert"
                alert = doc["data"]["alert"]
                assert alert["alert_id"] == alert_id
                assert alert["location"] == site.point()
                assert alert["kind"] == "personal"
                assert alert["note"] == "help"
                assert alert["requester_handle"] == requester.handle
                assert alert["respond_url"] == f"/v1/alerts/{alert_id}/responses"
            res = api.post(
                f"/v1/alerts/{alert_id}/responses",
                json={"answer": "accept"},
                headers=auth(people[1][1]),
            )
            assert res.status_code == 200
            outbox.run_once()
            later = webhook.requests[3:]
            assert sorted(r.path for r in later) == ["/hook/0", "/hook/2"]
            assert {r.json()["kind"] for r in later} == {"stand_down"}
            outbox.run_once()
            assert len(webhook.requests) == 5
