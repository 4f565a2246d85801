"""Wave escalation on a manual clock: next waves, sizes, stand-down, restarts, SKIP LOCKED."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from api.alerts.escalation import ESCALATION_HORIZON, EscalationWorker
from api.alerts.schemas import AlertCoordinatorView
from tests.alerts.helpers import deliveries, post_alert
from tests.api.factories import auth


def raise_alert(
    api: TestClient, token: str, site: Any, *, needed: int = 1, kind: str = "personal"
) -> str:
    body = {"location": site.point(), "kind": kind, "needed": needed}
    res = post_alert(api, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def coordinator_view(api: TestClient, token: str, alert_id: str) -> AlertCoordinatorView:
    res = api.get(f"/v1/alerts/{alert_id}", headers=auth(token))
    assert res.status_code == 200, res.text
    return AlertCoordinatorView.model_validate(res.json())


def answer(api: TestClient, token: str, alert_id: str, value: str) -> Any:
    return api.post(f"/v1/alerts/{alert_id}/responses", json={"answer": value}, headers=auth(token))


def worker(session_factory, settings, graphs, clock) -> EscalationWorker:
    return EscalationWorker(session_factory, settings, graphs, clock=clock)


class TestEscalation:
    def test_the_next_wave_goes_out_when_too_few_accepted_in_time(
        self, api, db, site, crowd, place, coordinator, clock, session_factory, settings, graphs
    ):
        _, token = coordinator
        alert_id = raise_alert(api, token, site, needed=1)
        # Each pass uses a fresh worker: the escalation state lives in the database.
        clock.advance(settings.wave_timeout_s - 1)
        assert worker(session_factory, settings, graphs, clock).run_once() == 0
        clock.advance(1)
        assert worker(session_factory, settings, graphs, clock).run_once() == 1
        view = coordinator_view(api, token, alert_id)
        assert [r.wave for r in view.responders] == [1] * 3 + [2] * 3 + [None] * 6
        assert view.wave == 2
        assert view.notified_count == 6
        assert len(deliveries(db, alert_id, message_kind="alert")) == 6
        # Nothing more until the next timeout; then the third and fourth waves drain the reserve.
        assert worker(session_factory, settings, graphs, clock).run_once() == 0
        for expected in (9, 12):
            clock.advance(settings.wave_timeout_s)
            assert worker(session_factory, settings, graphs, clock).run_once() == 1
            assert coordinator_view(api, token, alert_id).notified_count == expected
        # The reserve is empty, but the alert keeps looking for people coming into reach.
        view = coordinator_view(api, token, alert_id)
        assert view.next_wave_at == clock.now() + timedelta(seconds=settings.wave_timeout_s)
        newcomer, _ = place(site, site.nodes_by_time()[2])
        clock.advance(settings.wave_timeout_s)
        assert worker(session_factory, settings, graphs, clock).run_once() == 1
        view = coordinator_view(api, token, alert_id)
        assert view.notified_count == 13
        assert view.responders[0].member_id == newcomer.id
        assert (view.responders[0].wave, view.responders[0].state) == (5, "notified")
        # Past the horizon it stops.
        clock.set(view.created_at + ESCALATION_HORIZON)
        assert worker(session_factory, settings, graphs, clock).run_once() == 1
        assert coordinator_view(api, token, alert_id).next_wave_at is None
        clock.advance(10 * settings.wave_timeout_s)
        assert worker(session_factory, settings, graphs, clock).run_once() == 0
        assert len(deliveries(db, alert_id, message_kind="alert")) == 13

    def test_without_graphs_the_worker_only_uses_the_reserve(
        self, api, site, crowd, place, coordinator, clock, session_factory, settings
    ):
        _, token = coordinator
        alert_id = raise_alert(api, token, site, needed=4)
        # needed 4: a first wave of 12 takes the whole crowd, nothing is left in reserve.
        view = coordinator_view(api, token, alert_id)
        assert view.notified_count == 12
        place(site, site.nodes_by_time()[2])
        clock.advance(settings.wave_timeout_s)
        assert EscalationWorker(session_factory, settings, None, clock=clock).run_once() == 1
        view = coordinator_view(api, token, alert_id)
        assert view.notified_count == 12
        assert view.wave == 1
        assert view.next_wave_at is None

    def test_a_wave_is_sized_by_how_many_are_still_missing(
        self, api, site, place, coordinator, clock, session_factory, settings, graphs
    ):
        nodes = site.nodes_by_time()[5:400:12][:22]
        people = [place(site, n) for n in nodes]
        _, token = coordinator
        alert_id = raise_alert(api, token, site, needed=3)
        first = math.ceil(3 / settings.acceptance_rate)
        view = coordinator_view(api, token, alert_id)
        assert view.notified_count == first == 9
        notified = {r.member_id for r in view.responders if r.wave == 1}
        accepter = next(t for m, t in people if m.id in notified)
        assert answer(api, accepter, alert_id, "accept").status_code == 200
        clock.advance(settings.wave_timeout_s)
        assert worker(session_factory, settings, graphs, clock).run_once() == 1
        view = coordinator_view(api, token, alert_id)
        second = [r for r in view.responders if r.wave == 2]
        assert len(second) == math.ceil(2 / settings.acceptance_rate) == 6
        # The next wave is the best of the reserve.
        assert [r.member_id for r in view.responders[first : first + 6]] == [
            r.member_id for r in second
        ]

    def test_once_enough_accept_the_rest_stand_down_and_waves_stop(
        self, api, db, site, crowd, coordinator, clock, session_factory, settings, graphs
    ):
        _, token = coordinator
        alert_id = raise_alert(api, token, site, needed=1)
        tokens = {m.id: t for m, t in crowd}
        first_wave = [r.member_id for r in coordinator_view(api, token, alert_id).responders[:3]]
        res = answer(api, tokens[first_wave[1]], alert_id, "accept")
        assert res.status_code == 200
        assert res.json()["state"] == "accepted"
        view = coordinator_view(api, token, alert_id)
        assert view.status == "fulfilled"
        assert view.next_wave_at is None
        assert [r.state for r in view.responders[:3]] == ["stood_down", "accepted", "stood_down"]
        stand_downs = deliveries(db, alert_id, message_kind="stand_down")
        assert {d.member_id for d in stand_downs} == {first_wave[0], first_wave[2]}
        # Alert messages not yet sent to those stood down are cancelled; the accepter's stays.
        states = {d.member_id: d.state for d in deliveries(db, alert_id, message_kind="alert")}
        assert states == {
            first_wave[0]: "cancelled",
            first_wave[1]: "pending",
            first_wave[2]: "cancelled",
        }
        clock.advance(5 * settings.wave_timeout_s)
        assert worker(session_factory, settings, graphs, clock).run_once() == 0
        assert coordinator_view(api, token, alert_id).notified_count == 3
        # A stood-down member's offer is refused; declining keeps the stand-down on record.
        assert answer(api, tokens[first_wave[0]], alert_id, "accept").status_code == 409
        declined = answer(api, tokens[first_wave[0]], alert_id, "decline").json()
        assert declined["state"] == "stood_down"

    def test_a_withdrawal_after_fulfilment_escalates_at_once(
        self, api, db, site, crowd, coordinator, clock, session_factory, settings, graphs
    ):
        _, token = coordinator
        alert_id = raise_alert(api, token, site, needed=1)
        tokens = {m.id: t for m, t in crowd}
        first = coordinator_view(api, token, alert_id).responders[0].member_id
        answer(api, tokens[first], alert_id, "accept")
        assert coordinator_view(api, token, alert_id).status == "fulfilled"
        assert answer(api, tokens[first], alert_id, "decline").json()["state"] == "declined"
        view = coordinator_view(api, token, alert_id)
        assert view.status == "open"
        assert view.next_wave_at == clock.now()
        assert worker(session_factory, settings, graphs, clock).run_once() == 1
        assert coordinator_view(api, token, alert_id).wave == 2

    def test_mass_alerts_have_no_waves_and_no_stand_down(
        self, api, db, site, crowd, coordinator, clock, session_factory, settings, graphs
    ):
        _, token = coordinator
        alert_id = raise_alert(api, token, site, needed=1, kind="mass")
        tokens = {m.id: t for m, t in crowd}
        view = coordinator_view(api, token, alert_id)
        assert view.notified_count == len(crowd)
        answer(api, tokens[view.responders[0].member_id], alert_id, "accept")
        view = coordinator_view(api, token, alert_id)
        assert view.status == "fulfilled"
        assert "stood_down" not in {r.state for r in view.responders}
        assert deliveries(db, alert_id, message_kind="stand_down") == []
        clock.advance(5 * settings.wave_timeout_s)
        assert worker(session_factory, settings, graphs, clock).run_once() == 0


class TestWorkerConcurrency:
    def test_an_alert_locked_elsewhere_is_skipped_not_waited_for(
        self, committed, site, engine, clock, settings, graphs
    ):
        client = TestClient(committed["app"], raise_server_exceptions=False)
        alert_id = raise_alert(client, committed["tokens"]["requester"], site, needed=1)
        clock.advance(settings.wave_timeout_s)
        escalation = EscalationWorker(committed["factory"], settings, graphs, clock=clock)
        with engine.connect() as other:
            other.execute(text("SELECT id FROM alert WHERE id = :id FOR UPDATE"), {"id": alert_id})
            assert escalation.run_once() == 0
            other.rollback()
        assert escalation.run_once() == 1
        assert escalation.run_once() == 0

    def test_start_and_stop_run_the_worker_in_a_thread(
        self, committed, site, clock, settings, graphs
    ):
        client = TestClient(committed["app"], raise_server_exceptions=False)
        token = committed["tokens"]["requester"]
        alert_id = raise_alert(client, token, site, needed=1)
        clock.advance(settings.wave_timeout_s)
        escalation = EscalationWorker(committed["factory"], settings, graphs, clock=clock)
        # The thread makes one pass before it first waits, so stop() returns after it.
        escalation.start()
        escalation.stop()
        with committed["factory"]() as session:
            wave = session.execute(
                text("SELECT wave FROM alert WHERE id = :id"), {"id": alert_id}
            ).scalar()
        assert wave == 2


class TestWorkerFailures:
    def test_an_alert_that_fails_to_escalate_is_postponed_and_others_go_on(
        self, api, db, site, crowd, place, coordinator, clock, session_factory, settings, graphs
    ):
        nodes = site.nodes_by_time()
        for node in nodes[300:304]:
            place(site, node, roles=("defense",))
        _, token = coordinator
        personal = raise_alert(api, token, site, needed=1)
        clock.advance(1)
        defense = raise_alert(api, token, site, needed=1, kind="defense")
        view = coordinator_view(api, token, personal)
        victim = view.responders[3].member_id
        assert victim in {m.id for m, _ in crowd}
        # The database refuses the outbox row of the personal alert's second wave.
        db.execute(
            text(
                "CREATE FUNCTION pg_temp.refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.member_id = '{victim}' THEN RAISE EXCEPTION 'disk full'; "
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
        clock.advance(settings.wave_timeout_s)
        assert worker(session_factory, settings, graphs, clock).run_once() == 1
        failed = coordinator_view(api, token, personal)
        assert failed.wave == 1
        assert failed.notified_count == 3
        assert failed.next_wave_at == clock.now() + timedelta(seconds=settings.wave_timeout_s)
        assert coordinator_view(api, token, defense).wave == 2
        assert len(deliveries(db, personal, message_kind="alert")) == 3
