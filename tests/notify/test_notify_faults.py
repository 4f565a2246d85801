"""Outbox fault tests: concurrent workers, a worker killed mid-delivery, a database restart."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api.clock import ManualClock
from api.database import transaction
from api.notify import repository as repo
from api.notify.service import delivery_id
from tests.notify.conftest import HttpReceiver, deliveries


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def restart_database(database_url: str) -> int:
    """What a server restart does to clients: every connection to the test database dies."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (url.database,),
        ).fetchone()
    return int(killed[0]) if killed else 0


@contextmanager
def database_away(database_url: str, *, for_s: float) -> Iterator[None]:
    """The test database refuses connections for ``for_s`` seconds, as while it restarts."""
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    name = url.database

    def allow() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    timer = threading.Timer(for_s, allow)
    try:
        restart_database(database_url)
        timer.start()
        yield
    finally:
        timer.cancel()
        allow()


class TestConcurrentWorkers:
    def test_two_workers_draining_at_once_send_each_delivery_once(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
    ) -> None:
        members = [make_member(webhook_url=webhook.url) for _ in range(30)]
        alert_id = enqueue_committed(*members)
        workers = [make_worker(batch_size=4), make_worker(batch_size=4)]
        start = threading.Barrier(len(workers))
        attempted: list[int] = []

        def drain(worker) -> None:  # type: ignore[no-untyped-def]
            start.wait()
            total = 0
            while (n := worker.run_once()) > 0:
                total += n
            attempted.append(total)

        threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        counts = Counter(webhook.ids())
        assert sum(attempted) == 30
        assert len(counts) == 30 and set(counts.values()) == {1}
        assert set(counts) == {delivery_id(alert_id, m.id, "webhook", "alert") for m in members}
        rows = deliveries(committed, alert_id)
        assert {(r.state, r.attempts) for r in rows} == {("sent", 1)}

    def test_rows_locked_by_a_claim_in_progress_are_skipped(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        clock: ManualClock,
    ) -> None:
        members = [make_member(webhook_url=webhook.url) for _ in range(4)]
        alert_id = enqueue_committed(*members)
        with committed() as slow:  # a worker stuck inside its pick transaction
            held = repo.claim_due(
                slow, now=clock.now(), lease_until=clock.now(), limit=2, max_attempts=4
            )
            assert len(held) == 2
            assert make_worker().run_once() == 2
            sent_ids = set(webhook.ids())
            assert sent_ids.isdisjoint({c.delivery_id for c in held})
            slow.rollback()  # the stuck worker dies: its rows are pending again
        assert make_worker().run_once() == 2
        assert Counter(webhook.ids()) == Counter(
            {delivery_id(alert_id, m.id, "webhook", "alert"): 1 for m in members}
        )


class TestWorkerKilled:
    def test_killed_after_sending_before_marking_resends_under_the_same_id(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        clock: ManualClock,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        doomed = make_worker()
        claims = doomed.claim()
        outcomes = [doomed.send(c) for c in claims]  # ...and the process dies before record()
        assert [o.state for o in outcomes] == ["sent"]
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts) == ("sending", 1)

        survivor = make_worker()
        assert survivor.run_once() == 0  # the lease still holds
        clock.advance(doomed.lease_s)
        assert survivor.run_once() == 1
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts) == ("sent", 2)
        expected = delivery_id(alert_id, member.id, "webhook", "alert")
        assert webhook.ids() == [expected, expected]  # at least once, never under another id
        # A zombie waking up later cannot overwrite the newer attempt's outcome.
        assert doomed.record(claims, outcomes) == 0
        assert deliveries(committed, alert_id)[0].attempts == 2

    def test_a_worker_lost_on_the_last_attempt_leaves_the_row_failed(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        notify_settings,
        clock: ManualClock,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        last_try = notify_settings.model_copy(update={"delivery_max_attempts": 1})
        doomed = make_worker(last_try)
        [claim] = doomed.claim()
        doomed.send(claim)  # ...and dies: a poison row must not be re-sent forever
        clock.advance(doomed.lease_s)
        assert make_worker(last_try).run_once() == 0
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts) == ("failed", 1)
        assert "may have been delivered" in (row.last_error or "")
        assert len(webhook.requests) == 1

    def test_killed_after_claiming_before_sending_sends_after_the_lease(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        clock: ManualClock,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        doomed = make_worker()
        assert len(doomed.claim()) == 1
        clock.advance(doomed.lease_s - 1)
        assert make_worker().run_once() == 0
        clock.advance(1)
        assert make_worker().run_once() == 1
        assert len(webhook.requests) == 1
        assert deliveries(committed, alert_id)[0].state == "sent"


class TestDatabaseRestart:
    def test_restart_right_after_the_enqueue_commit_loses_nothing(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        database_url: str,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        worker = make_worker()
        assert worker.run_once() == 0  # the worker's pool holds a connection now
        alert_id = enqueue_committed(member)
        assert restart_database(database_url) >= 1
        assert worker.run_once() == 1  # pool_pre_ping replaces the dead connections
        assert deliveries(committed, alert_id)[0].state == "sent"
        assert len(webhook.requests) == 1

    def test_running_worker_survives_restarts_and_keeps_delivering(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        database_url: str,
    ) -> None:
        members = [make_member(webhook_url=webhook.url) for _ in range(3)]
        worker = make_worker()
        worker.start()
        first = enqueue_committed(members[0])
        assert wait_until(lambda: len(webhook.requests) == 1)
        for member in members[1:]:
            restart_database(database_url)
            time.sleep(0.1)  # let the worker hit the dead connection in its loop
            enqueue_committed(member, alert_id=first)
        assert wait_until(lambda: len(webhook.requests) == 3)
        assert wait_until(lambda: {r.state for r in deliveries(committed, first)} == {"sent"})
        worker.stop(timeout_s=10)
        assert Counter(webhook.ids()) == Counter(
            {delivery_id(first, m.id, "webhook", "alert"): 1 for m in members}
        )


class TestLoop:
    def test_started_worker_delivers_and_stops_promptly(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
    ) -> None:
        worker = make_worker()
        worker.start()
        enqueue_committed(make_member(webhook_url=webhook.url))
        assert wait_until(lambda: len(webhook.requests) == 1)
        thread = worker._thread
        assert thread is not None and thread.is_alive()
        worker.stop(timeout_s=5)
        assert not thread.is_alive()

    def test_receiver_errors_do_not_stop_the_loop(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        clock: ManualClock,
    ) -> None:
        worker = make_worker()
        worker.start()
        webhook.then(500)
        alert_id = enqueue_committed(make_member(webhook_url=webhook.url))
        assert wait_until(
            lambda: (
                deliveries(committed, alert_id)[0].state == "pending"
                and deliveries(committed, alert_id)[0].attempts == 1
            )
        )
        clock.advance(timedelta(minutes=10).total_seconds())
        assert wait_until(lambda: deliveries(committed, alert_id)[0].state == "sent")
        assert len(webhook.requests) == 2

    def test_outcome_is_recorded_after_a_restart_between_send_and_record(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        database_url: str,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        worker = make_worker()
        claims = worker.claim()
        outcomes = [worker.send(c) for c in claims]
        restart_database(database_url)
        worker._record_with_retries(claims, outcomes)
        [row] = deliveries(committed, alert_id)
        assert row.state == "sent"
        assert len(webhook.requests) == 1

    def test_outcome_is_recorded_once_the_database_is_back_within_the_lease(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        database_url: str,
    ) -> None:
        # A restart takes seconds: the outcome waits for the database instead of expiring
        # with the lease and being sent again.
        alert_id = enqueue_committed(make_member(webhook_url=webhook.url))
        worker = make_worker()
        claims = worker.claim()
        outcomes = [worker.send(c) for c in claims]
        started = time.monotonic()
        with database_away(database_url, for_s=3.0):
            worker._record_with_retries(claims, outcomes)
        assert time.monotonic() - started >= 3.0
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts) == ("sent", 1)
        assert len(webhook.requests) == 1


def test_transaction_helper_rolls_back_a_failed_enqueue(
    make_member,
    committed: sessionmaker[Session],
    notify_settings,
    clock: ManualClock,
    webhook: HttpReceiver,
) -> None:
    """The outbox rows live and die with the caller's transaction (no alert, no message)."""
    import uuid

    import pytest

    from api.notify.service import enqueue

    member = make_member(webhook_url=webhook.url)
    alert_id = uuid.uuid4()
    with pytest.raises(RuntimeError), transaction(committed) as session:
        enqueue(
            session,
            notify_settings,
            member=member,
            alert_id=alert_id,
            message_kind="alert",
            payload={"text": "x"},
            now=clock.now(),
        )
        raise RuntimeError("the alert insert failed")
    assert deliveries(committed, alert_id) == []


def test_loop_survives_an_unreachable_database(
    make_worker,
    notify_settings,
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    import logging

    from api.database import make_engine, make_session_factory
    from tests.notify.conftest import free_port

    dead = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere", pool_size=1
    )
    from api.notify.worker import OutboxWorker

    worker = OutboxWorker(make_session_factory(dead), notify_settings)
    caplog.set_level(logging.WARNING, logger="ern.notify")
    worker.start()
    try:
        # A database that is away is expected (a restart, a failover): one warning per
        # iteration, no traceback, and the loop goes on.
        assert wait_until(
            lambda: sum("database unavailable" in r.getMessage() for r in caplog.records) >= 2
        )
        assert not any(r.exc_info for r in caplog.records)
        assert worker._thread is not None and worker._thread.is_alive()
    finally:
        worker.stop(timeout_s=5)
        dead.dispose()
    assert worker._thread is None


class TestWakeup:
    def test_a_committed_enqueue_wakes_an_idle_worker_before_its_next_poll(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        notify_settings,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        sleepy = notify_settings.model_copy(update={"worker_poll_s": 60.0})
        worker = make_worker(sleepy)
        worker.start()
        assert wait_until(lambda: worker.listening)
        time.sleep(0.2)  # the worker is now idle, waiting up to a minute
        enqueue_committed(member)
        assert wait_until(lambda: len(webhook.requests) == 1, timeout_s=20)
        thread = worker._thread
        assert thread is not None
        worker.stop(timeout_s=5)  # a long poll interval does not delay stopping
        assert not thread.is_alive()

    def test_without_listen_the_worker_still_polls(
        self, make_member, enqueue_committed, make_worker, webhook: HttpReceiver
    ) -> None:
        worker = make_worker(listen=False)
        worker.start()
        enqueue_committed(make_member(webhook_url=webhook.url))
        assert wait_until(lambda: len(webhook.requests) == 1)
        assert not worker.listening
