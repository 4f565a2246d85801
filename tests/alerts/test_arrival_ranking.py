"""Ranking by expected arrival over HTTP: members' own records reorder and size the first wave."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from geoalchemy2.shape import from_shape
from shapely.geometry import Point as ShapelyPoint

from api.alerts.acceptance import RECORDS, acceptance_probabilities
from api.alerts.models import Alert, AlertResponder
from api.alerts.schemas import AlertCoordinatorView
from tests.alerts.helpers import post_alert


def history(db: Any, site: Any, clock: Any, records: dict[uuid.UUID, tuple[int, int]], **alert):
    """Closed past alerts in which each member accepted ``a`` of ``n`` notifications."""
    rounds = max(n for _, n in records.values())
    for i in range(rounds):
        when = clock.now() - timedelta(days=1, minutes=i)
        row = Alert(
            id=uuid.uuid4(),
            requester_id=None,
            idempotency_key=uuid.uuid4().hex,
            request_hash=hashlib.sha256(b"x").digest(),
            kind="personal",
            needed=1,
            location=from_shape(ShapelyPoint(site.lon, site.lat), srid=4326),
            presence_at=when,
            status="closed",
            created_at=when,
            closed_at=when + timedelta(minutes=5),
            **alert,
        )
        db.add(row)
        db.flush()
        for position, (member_id, (accepted, notified)) in enumerate(records.items()):
            if i >= notified:
                continue
            db.add(
                AlertResponder(
                    alert_id=row.id,
                    member_id=member_id,
                    position=position,
                    eta_s=100.0,
                    mode="walk",
                    wave=1,
                    state="accepted" if i < accepted else "declined",
                    notified_at=when,
                )
            )
    db.commit()


def raise_alert(api: Any, token: str, site: Any, **extra: Any) -> AlertCoordinatorView:
    body = {"location": site.point(), "kind": "personal", "needed": 1, **extra}
    res = post_alert(api, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    return AlertCoordinatorView.model_validate(res.json())


def first_wave(view: AlertCoordinatorView) -> list[uuid.UUID]:
    return [r.member_id for r in view.responders if r.wave == 1]


class TestArrivalRanking:
    def test_without_history_the_ranking_and_wave_are_as_before(
        self, api, site, crowd, coordinator
    ):
        view = raise_alert(api, coordinator[1], site)
        assert [r.member_id for r in view.responders] == [m.id for m, _ in crowd]
        assert first_wave(view) == [m.id for m, _ in crowd[:3]]  # ceil(1 / 0.35)

    def test_reliable_members_go_first_when_their_expected_arrival_is_much_sooner(
        self, api, db, site, crowd, coordinator, clock
    ):
        good = {crowd[3][0].id, crowd[4][0].id}
        records = {m.id: ((10, 10) if m.id in good else (0, 10)) for m, _ in crowd}
        history(db, site, clock, records)
        view = raise_alert(api, coordinator[1], site)
        wave = first_wave(view)
        # p(good) = (10 + 10 r) / 20 with r = 20/120; P(>= 1 of the two) = 0.83 < 0.9: the cap.
        # The view lists by ETA: the two reliable members, then the nearest of the others.
        assert set(wave) == good | {crowd[0][0].id}

    def test_one_very_reliable_member_is_a_wave_of_one(
        self, api, db, site, crowd, coordinator, clock
    ):
        star = crowd[5][0].id
        records = {m.id: ((90, 90) if m.id == star else (0, 10)) for m, _ in crowd}
        history(db, site, clock, records)
        # p = (90 + 10 x 0.45) / 100 = 0.945 >= 0.9
        assert first_wave(raise_alert(api, coordinator[1], site)) == [star]

    def test_exercises_count_only_for_exercises(self, api, db, site, crowd, coordinator, clock):
        star = crowd[5][0].id
        records = {m.id: ((90, 90) if m.id == star else (0, 10)) for m, _ in crowd}
        history(db, site, clock, records, exercise=True)
        live = raise_alert(api, coordinator[1], site)
        assert first_wave(live) == [m.id for m, _ in crowd[:3]]
        drill = raise_alert(api, coordinator[1], site, exercise=True)
        assert [r.member_id for r in drill.responders if r.wave == 1] == [star]

    def test_old_history_is_forgotten(self, api, db, site, crowd, coordinator, clock):
        star = crowd[5][0].id
        records = {m.id: ((90, 90) if m.id == star else (0, 10)) for m, _ in crowd}
        history(db, site, clock, records)
        clock.advance(91 * 86400)
        view = raise_alert(api, coordinator[1], site)
        assert first_wave(view) == [m.id for m, _ in crowd[:3]]


class TestRecordReuse:
    """ERN_ACCEPTANCE_RECORD_TTL_S: records are counted once in a while, not on every alert."""

    @pytest.fixture
    def reuse(self, settings):  # type: ignore[no-untyped-def]
        RECORDS.clear()
        yield settings.model_copy(update={"acceptance_record_ttl_s": 60.0})
        RECORDS.clear()

    def rate_of_a_newcomer(self, db: Any, settings: Any, when: Any, *, exercise: bool = False):
        p = acceptance_probabilities(db, settings, [uuid.uuid4()], exercise=exercise, now=when)
        return float(p[0])

    def test_the_rate_is_reused_until_it_is_older_than_the_ttl(self, db, site, crowd, clock, reuse):
        start = clock.now()
        assert self.rate_of_a_newcomer(db, reuse, start) == reuse.acceptance_rate  # no history
        history(db, site, clock, {m.id: (1, 10) for m, _ in crowd})  # the network: 10 %
        assert self.rate_of_a_newcomer(db, reuse, start + timedelta(seconds=59)) == 0.35
        later = start + timedelta(seconds=60)
        assert self.rate_of_a_newcomer(db, reuse, later) == pytest.approx(0.1)
        # Counted afresh, the new totals are the ones reused from now on.
        still = later + timedelta(seconds=30)
        assert self.rate_of_a_newcomer(db, reuse, still) == pytest.approx(0.1)

    def test_exercises_and_a_clock_set_back_are_counted_afresh(self, db, site, crowd, clock, reuse):
        start = clock.now()
        assert self.rate_of_a_newcomer(db, reuse, start) == 0.35
        history(db, site, clock, {m.id: (1, 10) for m, _ in crowd}, exercise=True)
        assert self.rate_of_a_newcomer(db, reuse, start, exercise=True) == pytest.approx(0.1)
        assert self.rate_of_a_newcomer(db, reuse, start) == 0.35  # live alerts: still cached
        history(db, site, clock, {m.id: (1, 10) for m, _ in crowd})
        before = start - timedelta(seconds=1)
        assert self.rate_of_a_newcomer(db, reuse, before) == pytest.approx(0.1)

    def test_a_members_record_is_reused_and_a_new_candidate_counted(
        self, db, site, crowd, clock, reuse
    ):
        start = clock.now()
        first, second = crowd[0][0].id, crowd[1][0].id
        p = acceptance_probabilities(db, reuse, [first], exercise=False, now=start)
        assert p.tolist() == [0.35]  # no history: the network's default rate
        history(db, site, clock, {first: (10, 10), second: (10, 10)})
        soon = start + timedelta(seconds=30)
        p = acceptance_probabilities(db, reuse, [first, second], exercise=False, now=soon)
        # The first member's record and the network's are reused; the second's is counted
        # (10 of 10, shrunk with weight 10 to the network's reused default of 0.35).
        assert p.tolist() == [0.35, pytest.approx((10 + 10 * 0.35) / 20)]
        later = start + timedelta(seconds=60)
        p = acceptance_probabilities(db, reuse, [first, second], exercise=False, now=later)
        assert p.tolist() == [1.0, 1.0]  # everyone accepted everything: the network too

    def test_candidates_all_known_are_not_counted_again(self, db, site, crowd, clock, reuse):
        start = clock.now()
        ids = [m.id for m, _ in crowd[:3]]
        before = acceptance_probabilities(db, reuse, ids, exercise=False, now=start)
        history(db, site, clock, {m: (10, 10) for m in ids})
        soon = start + timedelta(seconds=59)
        again = acceptance_probabilities(db, reuse, ids, exercise=False, now=soon)
        assert again.tolist() == before.tolist() == [0.35] * 3
        assert (
            acceptance_probabilities(
                db, reuse, ids, exercise=False, now=start + timedelta(seconds=60)
            ).tolist()
            == [1.0] * 3
        )

    def test_a_record_counted_later_is_not_replaced_by_an_earlier_one(self, clock, reuse):
        start, key = clock.now(), ("db", False, uuid.uuid4())
        RECORDS.put({key: (1, 1)}, now=start + timedelta(seconds=1), ttl_s=60)
        RECORDS.put({key: (0, 0)}, now=start, ttl_s=60)  # a slower alert, begun earlier
        assert RECORDS.fresh([key], now=start + timedelta(seconds=1), ttl_s=60) == {key: (1, 1)}

    def test_expired_records_are_swept_as_the_table_grows(self, clock, reuse):
        start = clock.now()
        old = {("db", False, uuid.uuid4()): (0, 1) for _ in range(1000)}
        RECORDS.put(old, now=start, ttl_s=60)
        assert len(RECORDS) == 1000
        later = start + timedelta(seconds=61)
        RECORDS.put({("db", False, uuid.uuid4()): (0, 1) for _ in range(24)}, now=later, ttl_s=60)
        assert len(RECORDS) == 24
        assert RECORDS.fresh(list(old), now=start, ttl_s=60) == {}

    def test_without_a_ttl_every_alert_counts(self, db, site, crowd, clock, settings):
        RECORDS.clear()
        start = clock.now()
        assert settings.acceptance_record_ttl_s == 0
        assert self.rate_of_a_newcomer(db, settings, start) == 0.35
        history(db, site, clock, {m.id: (1, 10) for m, _ in crowd})
        assert self.rate_of_a_newcomer(db, settings, start) == pytest.approx(0.1)
