"""Races in an alert's lifecycle on committed data: answers, closes and escalation passes at once.

Every racer runs in its own thread on its own connection behind a barrier, through the HTTP
API (answers, closes) or a real EscalationWorker; the outcome is checked against the rules
whatever order the database chose. Members deleting their account meet the other racers at
one chosen point (a lock held by another connection), so those races always run the same way.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from api import database
from api.alerts.escalation import EscalationWorker
from api.alerts.models import NOTIFIED_STATES, Alert, AlertResponder
from api.clock import ManualClock
from api.members import service as members_service
from api.members.models import Member
from api.members.schemas import MemberCreate
from api.notify.models import Delivery
from api.notify.worker import OutboxWorker
from tests.alerts.conftest import START
from tests.alerts.helpers import HOOK, Site, post_alert, race
from tests.api.factories import auth, member_body, unique_handle
from tests.notify.conftest import webhook  # noqa: F401  (fixture: a real local HTTP receiver)

RESPONDERS = 12


def body_at(
    site: Site, node: int | None, *, roles: Iterable[str] = ("responder",), hook: str = HOOK
) -> MemberCreate:
    """A member living around a graph node (None: the alert site), with a webhook contact."""
    lon = site.lon if node is None else float(site.graph.lon[node])
    lat = site.lat if node is None else float(site.graph.lat[node])
    data = member_body(
        unique_handle("race"),
        roles=roles,
        lon=lon,
        lat=lat,
        side_m=220.0,
        contact={"webhook_url": hook},
    )
    return MemberCreate.model_validate(data)


@dataclass
class Arena:
    """An app on real commits: a requester, a coordinator and twelve responders near the site."""

    app: Any
    engine: Engine
    factory: sessionmaker[Session]
    settings: Any
    graphs: Any
    clock: ManualClock
    site: Site
    hook: str
    requester: tuple[uuid.UUID, str]
    coordinator: tuple[uuid.UUID, str]
    # member id -> token, nearest first
    responders: dict[uuid.UUID, str]
    # members made by the test itself (deleted afterwards with the others)
    extra: list[uuid.UUID]
    # alerts raised (deleted afterwards, also those whose requester left)
    raised: list[uuid.UUID]

    def add_responder(self, node: int) -> uuid.UUID:
        """One more responder, committed, living around ``node``."""
        with database.transaction(self.factory) as session:
            member, token = members_service.create_member(
                session,
                self.settings,
                body_at(self.site, node, hook=self.hook),
                actor=None,
                graphs=self.graphs,
            )
        self.extra.append(member.id)
        self.responders[member.id] = token
        return member.id

    def client(self) -> TestClient:
        return TestClient(self.app, raise_server_exceptions=False)

    def worker(self) -> EscalationWorker:
        return EscalationWorker(self.factory, self.settings, self.graphs, clock=self.clock)

    def raise_alert(self, *, needed: int, kind: str = "personal") -> uuid.UUID:
        body = {"location": self.site.point(), "kind": kind, "needed": needed}
        res = post_alert(self.client(), self.requester[1], body, key=str(uuid.uuid4()))
        assert res.status_code == 201, res.text
        self.raised.append(uuid.UUID(res.json()["id"]))
        return self.raised[-1]

    def answer(self, member_id: uuid.UUID, alert_id: uuid.UUID, value: str) -> Any:
        tokens = {**self.responders, self.coordinator[0]: self.coordinator[1]}
        return self.client().post(
            f"/v1/alerts/{alert_id}/responses",
            json={"answer": value},
            headers=auth(tokens[member_id]),
        )

    def close(self, token: str, alert_id: uuid.UUID) -> Any:
        return self.client().post(f"/v1/alerts/{alert_id}/close", headers=auth(token))

    def alert(self, alert_id: uuid.UUID) -> Alert:
        with self.factory() as session:
            alert = session.get(Alert, alert_id)
            assert alert is not None
            return alert

    def rows(self, alert_id: uuid.UUID) -> dict[uuid.UUID, AlertResponder]:
        with self.factory() as session:
            stmt = select(AlertResponder).where(AlertResponder.alert_id == alert_id)
            return {r.member_id: r for r in session.scalars(stmt)}

    def outbox(self, alert_id: uuid.UUID, kind: str | None = None) -> list[Delivery]:
        with self.factory() as session:
            stmt = select(Delivery).where(Delivery.alert_id == alert_id)
            if kind is not None:
                stmt = stmt.where(Delivery.message_kind == kind)
            return list(session.scalars(stmt))

    def in_state(self, alert_id: uuid.UUID, *states: str) -> set[uuid.UUID]:
        return {m for m, r in self.rows(alert_id).items() if r.state in states}

    def wave(self, alert_id: uuid.UUID, wave: int) -> list[uuid.UUID]:
        rows = sorted(self.rows(alert_id).values(), key=lambda r: (r.eta_s, r.position))
        return [r.member_id for r in rows if r.wave == wave]


@pytest.fixture
def arena_hook() -> str:
    """Where the arena's members take their webhooks (a closed port: nothing is sent)."""
    return HOOK


@pytest.fixture
def arena(database_url, settings, graphs, site, arena_hook) -> Iterator[Arena]:
    """Members committed for real, an app on its own engine (enough connections for the racers)."""
    from api.main import create_app

    engine = database.make_engine(database_url, pool_size=16)
    factory = database.make_session_factory(engine)
    clock = ManualClock(START)
    nodes = site.nodes_by_time()[5:200:16][:RESPONDERS]
    made: list[tuple[Member, str]] = []
    extra: list[uuid.UUID] = []
    raised: list[uuid.UUID] = []
    with database.transaction(factory) as session:
        for roles, node in [((), None), (("coordinator",), None)] + [
            (("responder",), n) for n in nodes
        ]:
            body = body_at(site, node, roles=roles, hook=arena_hook)
            made.append(
                members_service.create_member(session, settings, body, actor=None, graphs=graphs)
            )
    app = create_app(settings, engine=engine, session_factory=factory, graphs=graphs, clock=clock)
    (requester, requester_token), (coord, coord_token), *people = made
    yield Arena(
        app=app,
        engine=engine,
        factory=factory,
        settings=settings,
        graphs=graphs,
        clock=clock,
        site=site,
        hook=arena_hook,
        requester=(requester.id, requester_token),
        coordinator=(coord.id, coord_token),
        responders={m.id: t for m, t in people},
        extra=extra,
        raised=raised,
    )
    ids = [m.id for m, _ in made] + extra
    with database.transaction(factory) as session:
        by_them = session.scalars(select(Alert.id).where(Alert.requester_id.in_(ids))).all()
        alert_ids = [*by_them, *raised]
        session.execute(delete(Delivery).where(Delivery.alert_id.in_(alert_ids)))
        session.execute(delete(Alert).where(Alert.id.in_(alert_ids)))
        session.execute(delete(Member).where(Member.id.in_(ids)))
    engine.dispose()


def withdrawal_racing_passes(
    arena: Arena, workers: list[EscalationWorker], member: uuid.UUID, alert_id: uuid.UUID
) -> list[Any]:
    """Each worker's count of escalations, then the answer to the member's withdrawal."""
    withdrawn = threading.Event()

    def passes(worker: EscalationWorker) -> int:
        # Passes until the withdrawal is in, then one more: the wave it makes due goes out.
        done = 0
        while not withdrawn.is_set():
            done += worker.run_once()
        return done + worker.run_once()

    def withdraw() -> Any:
        try:
            return arena.answer(member, alert_id, "decline")
        finally:
            withdrawn.set()

    return race(*(partial(passes, w) for w in workers), withdraw)


def errors_of(responses: list[Any]) -> Counter[tuple[int, str]]:
    """(status, error) of each answer; ('', 200) for successes."""
    out: Counter[tuple[int, str]] = Counter()
    for res in responses:
        out[(res.status_code, "" if res.status_code == 200 else res.json().get("error", ""))] += 1
    return out


def check_consistent(
    arena: Arena, alert_id: uuid.UUID, *, closed_by_coordinator: bool, delivering: bool = False
) -> None:
    """The rules every alert meets whatever order its racers ran in.

    ``delivering``: an outbox worker ran meanwhile, so alert messages may have gone out before
    they could be cancelled.
    """
    unsent = {"cancelled", "sent"} if delivering else {"cancelled"}
    alert = arena.alert(alert_id)
    rows = arena.rows(alert_id)
    accepted = {m for m, r in rows.items() if r.state == "accepted"}
    notified = {m for m, r in rows.items() if r.state in NOTIFIED_STATES}
    outbox = arena.outbox(alert_id)
    # One row per (member, channel, kind): the delivery id is unique, and nothing was made twice.
    keys = Counter((d.member_id, d.channel, d.message_kind) for d in outbox)
    assert max(keys.values()) == 1
    assert all(
        d.delivery_id == f"{d.alert_id}:{d.member_id}:{d.channel}:{d.message_kind}" for d in outbox
    )
    by_kind: dict[str, set[uuid.UUID]] = {}
    for d in outbox:
        by_kind.setdefault(d.message_kind, set()).add(d.member_id)
    # Everyone who was notified got the alert message once, and nobody else did.
    assert by_kind.get("alert", set()) == notified
    # Waves are numbered 1..wave, each notified member in one of them, nobody else in any.
    waves = {r.wave for r in rows.values() if r.state in NOTIFIED_STATES}
    assert waves == set(range(1, alert.wave + 1))
    assert all(r.wave is None for r in rows.values() if r.state == "ranked")
    stood_down = {m for m, r in rows.items() if r.state == "stood_down"}
    told_to_stand_down = by_kind.get("stand_down", set())
    assert stood_down <= told_to_stand_down
    assert not told_to_stand_down & accepted
    # A stood-down member's unsent alert message was cancelled.
    assert all(
        d.state in unsent for d in outbox if d.message_kind == "alert" and d.member_id in stood_down
    )
    if alert.status == "closed":
        assert alert.next_wave_at is None
        expected = notified | ({alert.requester_id} if closed_by_coordinator else set())
        assert by_kind.get("close", set()) == expected
        assert {d.state for d in outbox if d.message_kind == "alert"} <= unsent
    else:
        assert "close" not in by_kind
        if alert.kind != "mass":
            assert len(accepted) <= alert.needed
        assert alert.status == ("fulfilled" if len(accepted) >= alert.needed else "open")
        if alert.status == "fulfilled":
            assert alert.next_wave_at is None
            assert not {m for m, r in rows.items() if r.state == "notified"} or alert.kind == "mass"
        else:
            assert alert.next_wave_at is not None


class TestSimultaneousAnswers:
    def test_many_accepting_at_once_exactly_needed_are_accepted_and_the_rest_stand_down(
        self, arena
    ):
        alert_id = arena.raise_alert(needed=2)
        first = arena.wave(alert_id, 1)
        assert len(first) == 6
        answers = race(*(partial(arena.answer, m, alert_id, "accept") for m in first))
        assert errors_of(answers) == Counter({(200, ""): 2, (409, "StoodDown"): 4})
        winners = {m for m, res in zip(first, answers, strict=True) if res.status_code == 200}
        assert all(res.json()["state"] == "accepted" for res in answers if res.status_code == 200)
        assert arena.in_state(alert_id, "accepted") == winners
        assert arena.in_state(alert_id, "stood_down") == set(first) - winners
        stand_downs = arena.outbox(alert_id, "stand_down")
        assert sorted(d.member_id for d in stand_downs) == sorted(set(first) - winners)
        alert = arena.alert(alert_id)
        assert (alert.status, alert.fulfilled_at, alert.wave) == ("fulfilled", START, 1)
        check_consistent(arena, alert_id, closed_by_coordinator=False)
        # No wave follows a fulfilled alert.
        arena.clock.advance(3 * arena.settings.wave_timeout_s)
        assert arena.worker().run_once() == 0

    def test_everyone_accepting_a_mass_alert_at_once_is_accepted(self, arena):
        alert_id = arena.raise_alert(needed=2, kind="mass")
        notified = arena.in_state(alert_id, "notified")
        # A mass alert goes to every available member: the coordinator lives there too.
        assert notified == {*arena.responders, arena.coordinator[0]}
        answers = race(*(partial(arena.answer, m, alert_id, "accept") for m in notified))
        assert errors_of(answers) == Counter({(200, ""): RESPONDERS + 1})
        assert arena.in_state(alert_id, "accepted") == notified
        assert arena.alert(alert_id).status == "fulfilled"
        assert arena.outbox(alert_id, "stand_down") == []
        check_consistent(arena, alert_id, closed_by_coordinator=False)

    @pytest.mark.parametrize("value", ["accept", "decline"])
    def test_the_same_answer_sent_many_times_at_once_counts_once(self, arena, value):
        alert_id = arena.raise_alert(needed=1)
        first = arena.wave(alert_id, 1)
        member = first[0]
        answers = race(*[partial(arena.answer, member, alert_id, value)] * 8)
        assert errors_of(answers) == Counter({(200, ""): 8})
        assert len({res.text for res in answers}) == 1
        state = "accepted" if value == "accept" else "declined"
        assert arena.rows(alert_id)[member].state == state
        if value == "accept":
            assert arena.alert(alert_id).status == "fulfilled"
            assert sorted(d.member_id for d in arena.outbox(alert_id, "stand_down")) == sorted(
                first[1:]
            )
        else:
            assert arena.alert(alert_id).status == "open"
            assert arena.outbox(alert_id, "stand_down") == []
        check_consistent(arena, alert_id, closed_by_coordinator=False)

    def test_accept_and_decline_from_one_member_at_once_leave_one_consistent_answer(self, arena):
        for _ in range(3):
            alert_id = arena.raise_alert(needed=1)
            member = arena.wave(alert_id, 1)[0]
            calls = [partial(arena.answer, member, alert_id, v) for v in ("accept", "decline")]
            answers = race(*(calls * 3), stagger_s=0.02)
            assert errors_of(answers) == Counter({(200, ""): 6})
            check_consistent(arena, alert_id, closed_by_coordinator=False)


class TestCloseRaces:
    @pytest.mark.parametrize("closer", ["requester", "coordinator"])
    def test_accepts_racing_a_close(self, arena, closer):
        token = arena.requester[1] if closer == "requester" else arena.coordinator[1]
        for _ in range(4):
            alert_id = arena.raise_alert(needed=1)
            first = arena.wave(alert_id, 1)
            calls = [partial(arena.answer, m, alert_id, "accept") for m in first]
            *answers, closed = race(*calls, partial(arena.close, token, alert_id), stagger_s=0.02)
            assert closed.status_code == 200, closed.text
            assert closed.json()["status"] == "closed"
            outcomes = errors_of(answers)
            assert set(outcomes) <= {(200, ""), (409, "StoodDown"), (409, "AlertClosed")}
            assert outcomes[(200, "")] <= 1
            assert arena.in_state(alert_id, "accepted") == {
                m for m, res in zip(first, answers, strict=True) if res.status_code == 200
            }
            check_consistent(arena, alert_id, closed_by_coordinator=closer == "coordinator")

    def test_two_closes_at_once_tell_everyone_once(self, arena):
        for _ in range(3):
            alert_id = arena.raise_alert(needed=2)
            arena.answer(arena.wave(alert_id, 1)[0], alert_id, "accept")
            tokens = [arena.requester[1], arena.coordinator[1]] * 2
            answers = race(*(partial(arena.close, t, alert_id) for t in tokens))
            assert [res.status_code for res in answers] == [200] * 4
            told = Counter(d.member_id for d in arena.outbox(alert_id, "close"))
            assert set(told.values()) == {1}
            # The requester hears of it only when a coordinator's close came first.
            by_coordinator = arena.requester[0] in told
            check_consistent(arena, alert_id, closed_by_coordinator=by_coordinator)


class TestEscalationRaces:
    def test_several_workers_at_once_send_each_wave_once(self, arena):
        alerts = [arena.raise_alert(needed=1) for _ in range(6)]
        workers = [arena.worker() for _ in range(4)]
        # Waves 2-4 drain the reserve of 12; wave 5 ranks again (nobody new comes into reach).
        for wave in (2, 3, 4, 5):
            arena.clock.advance(arena.settings.wave_timeout_s)
            done = race(*(w.run_once for w in workers))
            assert sum(done) == len(alerts)
            for alert_id in alerts:
                alert = arena.alert(alert_id)
                expected = min(RESPONDERS, 3 * wave)
                assert (alert.wave, len(arena.outbox(alert_id, "alert"))) == (
                    min(wave, 4),
                    expected,
                )
                check_consistent(arena, alert_id, closed_by_coordinator=False)
        assert sum(race(*(w.run_once for w in workers))) == 0

    def test_answers_racing_escalation_passes(self, arena):
        for _ in range(6):
            alert_id = arena.raise_alert(needed=2)
            first = arena.wave(alert_id, 1)
            arena.clock.advance(arena.settings.wave_timeout_s)
            workers = [arena.worker() for _ in range(2)]
            answers = race(
                *(w.run_once for w in workers),
                *(partial(arena.answer, m, alert_id, "accept") for m in first[:2]),
                *(partial(arena.answer, m, alert_id, "decline") for m in first[2:]),
                stagger_s=0.05,
            )
            done, responses = answers[:2], answers[2:]
            assert sum(done) <= 1
            # Every answer is taken (the first wave's size follows the members' acceptance
            # history of the earlier rounds, issue 14).
            assert errors_of(responses) == Counter({(200, ""): len(first)})
            alert = arena.alert(alert_id)
            assert alert.status == "fulfilled"
            assert alert.wave == 1 + sum(done)
            # Whoever a second wave reached before the accepts fulfilled the alert stands down;
            # a decliner stood down before their decline came in stays stood down.
            second, decliners = set(arena.wave(alert_id, 2)), set(first[2:])
            stood_down = arena.in_state(alert_id, "stood_down")
            assert second <= stood_down <= second | decliners
            assert arena.in_state(alert_id, "declined") == decliners - stood_down
            check_consistent(arena, alert_id, closed_by_coordinator=False)
            # Those who accepted are busy while the alert is open (issue 14): free them for the
            # next round, which ranks the same responders.
            assert arena.close(arena.coordinator[1], alert_id).status_code == 200

    def test_a_withdrawal_racing_escalation_passes_sends_the_next_wave_once(self, arena):
        for _ in range(3):
            alert_id = arena.raise_alert(needed=1)
            first = arena.wave(alert_id, 1)
            assert arena.answer(first[0], alert_id, "accept").status_code == 200
            workers = [arena.worker() for _ in range(3)]
            *done, res = withdrawal_racing_passes(arena, workers, first[0], alert_id)
            assert res.status_code == 200
            assert res.json()["state"] == "declined"
            assert sum(done) == 1
            alert = arena.alert(alert_id)
            assert (alert.status, alert.wave) == ("open", 2)
            assert len(arena.wave(alert_id, 2)) == 3
            check_consistent(arena, alert_id, closed_by_coordinator=False)

    def test_a_close_racing_escalation_passes_stops_the_waves(self, arena):
        for _ in range(6):
            alert_id = arena.raise_alert(needed=1)
            arena.clock.advance(arena.settings.wave_timeout_s)
            workers = [arena.worker() for _ in range(2)]
            *done, closed = race(
                *(w.run_once for w in workers),
                partial(arena.close, arena.requester[1], alert_id),
                stagger_s=0.05,
            )
            assert closed.status_code == 200
            assert sum(done) <= 1
            assert arena.alert(alert_id).wave == 1 + sum(done)
            check_consistent(arena, alert_id, closed_by_coordinator=False)
            arena.clock.advance(arena.settings.wave_timeout_s)
            assert arena.worker().run_once() == 0


class TestWithdrawal:
    def test_a_withdrawal_with_an_empty_reserve_still_looks_for_newcomers(self, arena):
        # needed 4: the first wave (12) takes everyone ranked; the reserve is empty.
        alert_id = arena.raise_alert(needed=4)
        first = arena.wave(alert_id, 1)
        assert len(first) == RESPONDERS == len(arena.rows(alert_id))
        for member in first[:4]:
            assert arena.answer(member, alert_id, "accept").status_code == 200
        assert arena.alert(alert_id).status == "fulfilled"
        # Someone comes into reach, then an accepter withdraws: the alert is short again.
        newcomer = arena.add_responder(arena.site.nodes_by_time()[2])
        assert arena.answer(first[0], alert_id, "decline").status_code == 200
        alert = arena.alert(alert_id)
        assert alert.status == "open"
        # An open alert short of people keeps looking, as it did before it was fulfilled.
        assert arena.worker().run_once() == 1
        rows = arena.rows(alert_id)
        assert (rows[newcomer].wave, rows[newcomer].state) == (2, "notified")
        assert arena.alert(alert_id).next_wave_at is not None
        check_consistent(arena, alert_id, closed_by_coordinator=False)


# --- members leaving while their alert moves on ----------------------------------------------

LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def wait_for_lock_waiters(engine: Engine, count: int) -> None:
    """Return once ``count`` sessions of the database wait for a lock (10 s at most)."""
    deadline = time.monotonic() + 10.0
    with engine.connect() as conn:
        while conn.execute(LOCK_WAITERS).scalar_one() < count:
            assert time.monotonic() < deadline, f"never {count} sessions waiting for a lock"
            conn.rollback()
            time.sleep(0.005)


def cascade_order(engine: Engine) -> list[str]:
    """Tables a member's deletion cascades (or sets null) to, in the order the triggers fire."""
    query = text(
        "SELECT c.relname FROM pg_trigger t "
        "JOIN pg_constraint k ON k.oid = t.tgconstraint "
        "JOIN pg_class c ON c.oid = k.conrelid "
        "WHERE t.tgrelid = 'member'::regclass AND k.confdeltype IN ('c', 'n') "
        "AND t.tgname LIKE 'RI_ConstraintTrigger_a_%' ORDER BY t.tgname"
    )
    with engine.connect() as conn:
        return list(dict.fromkeys(conn.scalars(query)))


def leaving_during(arena: Arena, member: uuid.UUID, step: Callable[[], Any]) -> tuple[Any, Any]:
    """The member deletes their account while ``step`` runs: (DELETE's answer, step's result).

    Deterministic interleaving: a gate (another connection) holds the member's token row, so the
    deletion stops right after removing the member row, in its cascade to api_token; ``step``
    then starts and runs until it waits too; then the gate opens and the cascade goes on to
    the member's alert rows.
    """
    order = cascade_order(arena.engine)
    assert order.index("api_token") < min(order.index("alert_responder"), order.index("alert"))
    tokens = {**arena.responders, arena.requester[0]: arena.requester[1]}
    token = tokens[member]
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(name: str, call: Callable[[], Any]) -> None:
        try:
            results[name] = call()
        except BaseException as exc:
            errors.append(exc)

    url = f"/v1/members/{member}"
    leave = threading.Thread(
        target=run, args=("delete", partial(arena.client().delete, url, headers=auth(token)))
    )
    other = threading.Thread(target=run, args=("step", step))
    with arena.engine.connect() as gate:
        gate.execute(text("SELECT 1 FROM api_token WHERE member_id = :m FOR UPDATE"), {"m": member})
        leave.start()
        wait_for_lock_waiters(arena.engine, 1)
        other.start()
        wait_for_lock_waiters(arena.engine, 2)
        gate.rollback()
    leave.join(30)
    other.join(30)
    assert not leave.is_alive() and not other.is_alive()
    if errors:
        raise errors[0]
    arena.responders.pop(member, None)
    return results["delete"], results["step"]


class TestMembersLeaving:
    def test_a_member_leaving_while_the_next_wave_notifies_them(self, arena, caplog):
        caplog.set_level(logging.ERROR, logger="ern.escalation")
        alert_id = arena.raise_alert(needed=1)
        reserve = sorted(
            (r for r in arena.rows(alert_id).values() if r.state == "ranked"),
            key=lambda r: (r.eta_s, r.position),
        )
        leaver = reserve[0].member_id
        arena.clock.advance(arena.settings.wave_timeout_s)
        deleted, escalated = leaving_during(arena, leaver, arena.worker().run_once)
        assert deleted.status_code == 204, deleted.text
        # The wave went out now, not a wave timeout later, to the others of its wave.
        assert escalated == 1
        assert [r.message for r in caplog.records] == []
        alert = arena.alert(alert_id)
        assert alert.wave == 2
        second = arena.wave(alert_id, 2)
        assert leaver not in second
        assert set(second) <= {r.member_id for r in reserve[:3]}
        assert leaver not in {d.member_id for d in arena.outbox(alert_id)}
        check_consistent(arena, alert_id, closed_by_coordinator=False)

    def test_a_member_leaving_while_an_accept_stands_them_down(self, arena):
        alert_id = arena.raise_alert(needed=1)
        accepter, leaver, other = arena.wave(alert_id, 1)
        deleted, accepted = leaving_during(
            arena, leaver, partial(arena.answer, accepter, alert_id, "accept")
        )
        assert deleted.status_code == 204, deleted.text
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["state"] == "accepted"
        assert arena.alert(alert_id).status == "fulfilled"
        assert [d.member_id for d in arena.outbox(alert_id, "stand_down")] == [other]
        check_consistent(arena, alert_id, closed_by_coordinator=False)

    def test_a_member_leaving_while_the_alert_is_closed(self, arena):
        alert_id = arena.raise_alert(needed=1)
        first = arena.wave(alert_id, 1)
        leaver = first[1]
        deleted, closed = leaving_during(
            arena, leaver, partial(arena.close, arena.requester[1], alert_id)
        )
        assert deleted.status_code == 204, deleted.text
        assert closed.status_code == 200, closed.text
        told = {d.member_id for d in arena.outbox(alert_id, "close")}
        assert told == set(first) - {leaver}
        check_consistent(arena, alert_id, closed_by_coordinator=False)

    def test_a_requester_leaving_while_a_coordinator_closes_their_alert(self, arena):
        alert_id = arena.raise_alert(needed=1)
        first = arena.wave(alert_id, 1)
        deleted, closed = leaving_during(
            arena, arena.requester[0], partial(arena.close, arena.coordinator[1], alert_id)
        )
        assert deleted.status_code == 204, deleted.text
        assert closed.status_code == 200, closed.text
        alert = arena.alert(alert_id)
        assert (alert.status, alert.requester_id) == ("closed", None)
        assert {d.member_id for d in arena.outbox(alert_id, "close")} == set(first)

    def test_a_member_leaving_while_the_worker_ranks_them_again(self, arena, caplog):
        caplog.set_level(logging.ERROR, logger="ern.escalation")
        # needed 4: the first wave takes everyone ranked; the next pass ranks again.
        alert_id = arena.raise_alert(needed=4)
        newcomers = [arena.add_responder(n) for n in arena.site.nodes_by_time()[2:4]]
        arena.clock.advance(arena.settings.wave_timeout_s)
        deleted, escalated = leaving_during(arena, newcomers[0], arena.worker().run_once)
        assert deleted.status_code == 204, deleted.text
        assert escalated == 1
        assert [r.message for r in caplog.records] == []
        assert arena.wave(alert_id, 2) == newcomers[1:]
        check_consistent(arena, alert_id, closed_by_coordinator=False)


class TestStoodDown:
    def test_a_stood_down_member_cannot_accept_by_declining_first(self, arena):
        alert_id = arena.raise_alert(needed=1)
        accepter, stood_down, _ = arena.wave(alert_id, 1)
        assert arena.answer(accepter, alert_id, "accept").status_code == 200
        assert arena.answer(stood_down, alert_id, "accept").status_code == 409
        assert arena.answer(stood_down, alert_id, "decline").json()["state"] == "stood_down"
        res = arena.answer(stood_down, alert_id, "accept")
        assert res.status_code == 409
        assert arena.in_state(alert_id, "accepted") == {accepter}

    def test_a_stood_down_members_decline_keeps_the_row_stood_down(self, arena):
        alert_id = arena.raise_alert(needed=1)
        accepter, stood_down, other = arena.wave(alert_id, 1)
        assert arena.answer(accepter, alert_id, "accept").status_code == 200
        declined = arena.answer(stood_down, alert_id, "decline")
        assert declined.status_code == 200, declined.text
        assert declined.json()["state"] == "stood_down"
        # Declining again, too, leaves the stand-down on the alert's record.
        assert arena.answer(stood_down, alert_id, "decline").json()["state"] == "stood_down"
        assert arena.in_state(alert_id, "stood_down") == {stood_down, other}
        assert arena.in_state(alert_id, "declined") == set()

    def test_once_fulfilled_a_decline_cannot_become_an_extra_accept_until_it_reopens(self, arena):
        alert_id = arena.raise_alert(needed=1)
        accepter, decliner, _ = arena.wave(alert_id, 1)
        assert arena.answer(decliner, alert_id, "decline").status_code == 200
        assert arena.answer(accepter, alert_id, "accept").status_code == 200
        res = arena.answer(decliner, alert_id, "accept")
        assert res.status_code == 409
        assert "enough responders accepted" in res.json()["detail"]
        # The accepter withdraws: the alert is short again and open to accepts.
        assert arena.answer(accepter, alert_id, "decline").status_code == 200
        assert arena.answer(decliner, alert_id, "accept").status_code == 200
        assert arena.in_state(alert_id, "accepted") == {decliner}


class TestDeliveredOnce:
    @pytest.fixture
    def arena_hook(self, webhook):  # noqa: F811
        return f"{webhook.url}/hook"

    def test_outbox_workers_draining_during_the_races_send_each_message_once(
        self,
        arena,
        webhook,  # noqa: F811
    ):
        alert_id = arena.raise_alert(needed=2)
        first = arena.wave(alert_id, 1)
        arena.clock.advance(arena.settings.wave_timeout_s)
        outboxes = [
            OutboxWorker(arena.factory, arena.settings, clock=arena.clock, listen=False)
            for _ in range(2)
        ]
        stop = threading.Event()

        def drain(outbox: OutboxWorker) -> int:
            sent = 0
            while not stop.is_set():
                sent += outbox.run_once()
            return sent

        def answers_then_stop() -> list[Any]:
            try:
                return race(
                    *(partial(arena.answer, m, alert_id, "accept") for m in first),
                    *(w.run_once for w in [arena.worker(), arena.worker()]),
                    stagger_s=0.03,
                )
            finally:
                stop.set()

        try:
            *_, results = race(*(partial(drain, o) for o in outboxes), answers_then_stop)
            while sum(o.run_once() for o in outboxes):
                pass
        finally:
            for o in outboxes:
                o.close()
        responses = [r for r in results if not isinstance(r, int)]
        assert {r.status_code for r in responses} <= {200, 409}
        check_consistent(arena, alert_id, closed_by_coordinator=False, delivering=True)
        rows = arena.outbox(alert_id)
        assert {d.state for d in rows} <= {"sent", "cancelled"}
        received = Counter(webhook.ids())
        # Each message sent arrived exactly once; nothing cancelled arrived.
        assert received == Counter(d.delivery_id for d in rows if d.state == "sent")
        accepted = arena.in_state(alert_id, "accepted")
        assert len(accepted) == 2
        assert not {d.member_id for d in rows if d.message_kind == "stand_down"} & accepted
