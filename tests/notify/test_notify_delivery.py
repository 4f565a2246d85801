"""Outbox delivery to real local receivers (webhook, SMTP, SMS gateway); retries, failures."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta
from email.utils import format_datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from api.clock import ManualClock
from api.database import transaction
from api.members.crypto import contact_cipher
from api.members.models import AuditEvent, Member
from api.notify.channels import (
    message_id,
    parse_retry_after,
    scrub,
    verify_signature,
    webhook_signing_key,
)
from api.notify.models import Delivery
from api.notify.service import (
    backoff_s,
    cancel,
    channels_of,
    delivery_id,
    enqueue,
    enqueue_many,
    purge,
)
from api.notify.worker import BLOCKING_THREADS
from api.settings import Settings
from tests.notify.conftest import SMS_SID, START, HttpReceiver, SmtpInbox, deliveries


class TestEnqueue:
    def test_one_row_per_channel_and_a_repeat_adds_nothing(
        self, db: Session, settings: Settings
    ) -> None:
        cipher = contact_cipher(settings)
        contact = {
            "email": "a@example.org",
            "phone": "+358401234567",
            "webhook_url": "https://x.test/h",
        }
        member = Member(
            handle=f"enq-{uuid.uuid4().hex[:8]}",
            roles=[],
            contact_ciphertext=cipher.encrypt(contact),
        )
        db.add(member)
        db.flush()
        alert_id = uuid.uuid4()
        args = {
            "member": member,
            "alert_id": alert_id,
            "message_kind": "alert",
            "payload": {"text": "hi"},
            "now": START,
        }
        assert enqueue(db, settings, **args) == 3
        assert enqueue(db, settings, **args) == 0
        assert enqueue(db, settings, **{**args, "message_kind": "close"}) == 3
        rows = db.scalars(select(Delivery).where(Delivery.alert_id == alert_id)).all()
        assert sorted(r.delivery_id for r in rows if r.message_kind == "alert") == sorted(
            delivery_id(alert_id, member.id, ch, "alert") for ch in ("webhook", "email", "sms")
        )
        assert {r.state for r in rows} == {"pending"}
        assert all(r.next_attempt_at == START and r.attempts == 0 for r in rows)

    def test_member_without_contact_details_gets_no_rows(
        self, db: Session, settings: Settings
    ) -> None:
        member = Member(handle=f"enq-{uuid.uuid4().hex[:8]}", roles=[])
        db.add(member)
        db.flush()
        assert (
            enqueue(
                db,
                settings,
                member=member,
                alert_id=uuid.uuid4(),
                message_kind="alert",
                payload={},
                now=START,
            )
            == 0
        )

    def test_many_members_in_one_call_and_unreadable_contacts_are_skipped(
        self, db: Session, settings: Settings
    ) -> None:
        cipher = contact_cipher(settings)
        good = [
            Member(
                handle=f"enq-{uuid.uuid4().hex[:8]}",
                roles=[],
                contact_ciphertext=cipher.encrypt({"email": f"m{i}@example.org"}),
            )
            for i in range(3)
        ]
        broken = Member(
            handle=f"enq-{uuid.uuid4().hex[:8]}", roles=[], contact_ciphertext=b"not fernet"
        )
        db.add_all([*good, broken])
        db.flush()
        alert_id = uuid.uuid4()
        messages = [(m, {"text": f"for {m.handle}"}) for m in [*good, broken]]
        created = enqueue_many(
            db, settings, messages=messages, alert_id=alert_id, message_kind="alert", now=START
        )
        assert created == 3
        rows = db.scalars(select(Delivery).where(Delivery.alert_id == alert_id)).all()
        assert {r.member_id: r.payload["text"] for r in rows} == {
            m.id: f"for {m.handle}" for m in good
        }

    def test_purge_removes_an_alerts_rows_only(self, db: Session, settings: Settings) -> None:
        cipher = contact_cipher(settings)
        member = Member(
            handle=f"enq-{uuid.uuid4().hex[:8]}",
            roles=[],
            contact_ciphertext=cipher.encrypt({"phone": "+358401234567"}),
        )
        db.add(member)
        db.flush()
        old, kept = uuid.uuid4(), uuid.uuid4()
        for alert_id in (old, kept):
            enqueue(
                db,
                settings,
                member=member,
                alert_id=alert_id,
                message_kind="alert",
                payload={},
                now=START,
            )
        assert purge(db, alert_ids=[old]) == 1
        remaining = db.scalars(select(Delivery.alert_id).where(Delivery.member_id == member.id))
        assert list(remaining) == [kept]

    def test_channels_follow_contact_fields(self) -> None:
        assert channels_of({"phone": "+1", "email": ""}) == ["sms"]
        assert channels_of({"webhook_url": "http://h", "email": "e@x.y"}) == ["webhook", "email"]


class TestWebhook:
    def test_delivered_once_with_a_valid_signature(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        notify_settings: Settings,
        clock: ManualClock,
    ) -> None:
        member = make_member(webhook_url=f"{webhook.url}/hooks/ern")
        alert_id = enqueue_committed(member)
        worker = make_worker()
        assert worker.run_once() == 1
        assert len(webhook.requests) == 1
        request = webhook.requests[0]
        expected_id = delivery_id(alert_id, member.id, "webhook", "alert")
        assert request.path == "/hooks/ern"
        assert request.headers["x-ern-delivery"] == expected_id
        assert request.headers["content-type"] == "application/json"
        key = webhook_signing_key(notify_settings, member.id)
        assert verify_signature(key, request.body, request.headers["x-ern-signature"])
        assert not verify_signature(key, request.body + b" ", request.headers["x-ern-signature"])
        # Each member has a key of their own: another member's key does not verify it.
        other = webhook_signing_key(notify_settings, uuid.uuid4())
        assert not verify_signature(other, request.body, request.headers["x-ern-signature"])
        body = request.json()
        assert body["delivery_id"] == expected_id
        assert body["alert_id"] == str(alert_id)
        assert body["kind"] == "alert"
        assert body["data"]["text"] == "Help needed near you."
        assert body["sent_at"] == clock.now().isoformat()
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts, row.sent_at, row.last_error) == (
            "sent",
            1,
            clock.now(),
            None,
        )
        assert worker.run_once() == 0
        assert len(webhook.requests) == 1

    @pytest.mark.parametrize("status", [500, 503, 408])
    def test_failure_then_success_resends_under_the_same_id(
        self,
        status: int,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        notify_settings: Settings,
        clock: ManualClock,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        webhook.then(status)
        worker = make_worker()
        assert worker.run_once() == 1
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts) == ("pending", 1)
        assert f"HTTP {status}" in (row.last_error or "")
        # First retry waits between half and all of backoff_base_s (equal jitter).
        wait_s = (row.next_attempt_at - clock.now()).total_seconds()
        assert notify_settings.backoff_base_s / 2 <= wait_s <= notify_settings.backoff_base_s
        assert worker.run_once() == 0  # not due yet
        clock.advance(wait_s)
        assert worker.run_once() == 1
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts, row.last_error) == ("sent", 2, None)
        expected = delivery_id(alert_id, member.id, "webhook", "alert")
        assert webhook.ids() == [expected, expected]
        assert [r.json()["delivery_id"] for r in webhook.requests] == [expected, expected]

    def test_retry_after_seconds_is_honoured(
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
        webhook.then(429, {"Retry-After": "120"})
        worker = make_worker()
        assert worker.run_once() == 1
        [row] = deliveries(committed, alert_id)
        assert row.state == "pending"
        assert row.next_attempt_at == clock.now() + timedelta(seconds=120)
        assert "429" in (row.last_error or "")
        clock.advance(119)
        assert worker.run_once() == 0
        clock.advance(1)
        assert worker.run_once() == 1
        assert deliveries(committed, alert_id)[0].state == "sent"
        assert len(webhook.requests) == 2

    def test_retry_after_http_date_is_honoured(
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
        webhook.then(
            503, {"Retry-After": format_datetime(clock.now() + timedelta(seconds=90), usegmt=True)}
        )
        worker = make_worker()
        worker.run_once()
        [row] = deliveries(committed, alert_id)
        assert row.next_attempt_at == clock.now() + timedelta(seconds=90)

    def test_client_error_is_not_retried(
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
        webhook.then(400)
        worker = make_worker()
        assert worker.run_once() == 1
        clock.advance(3600)
        assert worker.run_once() == 0
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.attempts, row.sent_at) == ("failed", 1, None)
        assert row.last_error == "webhook answered HTTP 400"
        assert len(webhook.requests) == 1

    def test_exhausted_attempts_fail(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        notify_settings: Settings,
        clock: ManualClock,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        for _ in range(notify_settings.delivery_max_attempts):
            webhook.then(500)
        worker = make_worker()
        for _ in range(notify_settings.delivery_max_attempts):
            assert worker.run_once() == 1
            clock.advance(notify_settings.backoff_cap_s)
        assert worker.run_once() == 0
        [row] = deliveries(committed, alert_id)
        assert row.state == "failed"
        assert row.attempts == notify_settings.delivery_max_attempts
        assert f"gave up after {notify_settings.delivery_max_attempts} attempts" in (
            row.last_error or ""
        )

    def test_unreachable_receiver_is_retried_without_leaking_the_url(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        committed: sessionmaker[Session],
    ) -> None:
        from tests.notify.conftest import free_port

        url = f"http://127.0.0.1:{free_port()}/secret-path"
        member = make_member(webhook_url=url)
        alert_id = enqueue_committed(member)
        make_worker().run_once()
        [row] = deliveries(committed, alert_id)
        assert row.state == "pending"
        assert "unreachable" in (row.last_error or "")
        assert "secret-path" not in (row.last_error or "")


class TestEmail:
    def test_received_by_smtp_with_a_stable_message_id(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        smtp_server: SmtpInbox,
        committed: sessionmaker[Session],
        notify_settings: Settings,
    ) -> None:
        member = make_member(email="responder@example.org")
        alert_id = enqueue_committed(member)
        assert make_worker().run_once() == 1
        [(mail_from, rcpt_tos, mail)] = smtp_server.messages
        expected_id = delivery_id(alert_id, member.id, "email", "alert")
        assert mail_from == "alerts@ern.test"
        assert rcpt_tos == ["responder@example.org"]
        assert mail["Subject"] == "ern alert: personal, 2 needed"
        assert mail["Message-ID"] == message_id(expected_id, sender="alerts@ern.test")
        assert mail["X-Ern-Delivery"] == expected_id
        assert mail.get_payload(decode=True).decode().strip() == "Help needed near you."
        assert deliveries(committed, alert_id)[0].state == "sent"

    def test_a_batch_s_e_mails_share_connections_closed_at_its_end(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        smtp_server: SmtpInbox,
        committed: sessionmaker[Session],
    ) -> None:
        members = [make_member(email=f"r{i}@example.org") for i in range(12)]
        first = enqueue_committed(*members[:6])
        worker = make_worker(batch_size=6, concurrency=2)
        assert worker.run_once() == 6
        batch_one = set(smtp_server.peers)
        # At most one connection per e-mail in flight, each carrying several messages.
        assert len(smtp_server.messages) == 6 and 1 <= len(batch_one) <= 2
        second = enqueue_committed(*members[6:])
        assert worker.run_once() == 6
        batch_two = set(smtp_server.peers[6:])
        # The first batch's connections were closed (QUIT) at its end: new ones for the next.
        assert 1 <= len(batch_two) <= 2 and not batch_one & batch_two
        rows = deliveries(committed, first) + deliveries(committed, second)
        assert {(r.state, r.attempts) for r in rows} == {("sent", 1)}
        received = sorted(rcpt for _, [rcpt], _ in smtp_server.messages)
        assert received == sorted(f"r{i}@example.org" for i in range(12))

    def test_a_slow_relay_gets_at_most_blocking_threads_connections(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        smtp_server: SmtpInbox,
        committed: sessionmaker[Session],
    ) -> None:
        # 40 e-mails in flight at once would be 40 connections; the worker opens at most 32.
        smtp_server.delay_s = 0.3
        members = [make_member(email=f"s{i}@example.org") for i in range(40)]
        alert_id = enqueue_committed(*members)
        assert make_worker(batch_size=40, concurrency=40).run_once() == 40
        assert len(smtp_server.messages) == 40
        assert len(set(smtp_server.peers)) <= BLOCKING_THREADS
        assert {r.state for r in deliveries(committed, alert_id)} == {"sent"}

    def test_a_connection_the_server_dropped_is_replaced_without_losing_an_e_mail(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        smtp_server: SmtpInbox,
        committed: sessionmaker[Session],
    ) -> None:
        smtp_server.drop_after_each = True
        members = [make_member(email=f"d{i}@example.org") for i in range(4)]
        alert_id = enqueue_committed(*members)
        assert make_worker(batch_size=4, concurrency=1).run_once() == 4
        assert {(r.state, r.attempts) for r in deliveries(committed, alert_id)} == {("sent", 1)}
        assert len(smtp_server.messages) == 4 and len(set(smtp_server.peers)) == 4

    def test_message_id_is_the_same_for_every_attempt_and_differs_between_deliveries(self) -> None:
        a = message_id("x:y:email:alert", sender="ern@example.org")
        assert a == message_id("x:y:email:alert", sender="ern@example.org")
        assert a != message_id("x:y:email:close", sender="ern@example.org")
        assert a.startswith("<") and a.endswith("@example.org>")

    def test_smtp_server_down_is_retried(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        committed: sessionmaker[Session],
        notify_settings: Settings,
    ) -> None:
        from tests.notify.conftest import free_port

        member = make_member(email="responder@example.org")
        alert_id = enqueue_committed(member)
        down = notify_settings.model_copy(update={"smtp_port": free_port()})
        make_worker(down).run_once()
        [row] = deliveries(committed, alert_id)
        assert row.state == "pending"
        assert "SMTP server unreachable" in (row.last_error or "")


class TestSms:
    def test_received_by_the_gateway_with_basic_auth(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        sms_gateway: HttpReceiver,
        committed: sessionmaker[Session],
    ) -> None:
        member = make_member(phone="+358401234567")
        alert_id = enqueue_committed(member)
        assert make_worker().run_once() == 1
        [request] = sms_gateway.requests
        assert request.path == f"/2010-04-01/Accounts/{SMS_SID}/Messages.json"
        assert request.form() == {
            "To": "+358401234567",
            "From": "+358400000000",
            "Body": "Help needed near you.\nReply 1 to go, 2 if you can't",
        }
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.last_error) == ("sent", None)

    def test_wrong_credentials_fail_without_retry(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        sms_gateway: HttpReceiver,
        committed: sessionmaker[Session],
        notify_settings: Settings,
    ) -> None:
        member = make_member(phone="+358401234567")
        alert_id = enqueue_committed(member)
        from pydantic import SecretStr

        wrong = notify_settings.model_copy(update={"sms_auth_token": SecretStr("nope")})
        make_worker(wrong).run_once()
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.last_error) == ("failed", "SMS gateway answered HTTP 401")

    def test_unconfigured_gateway_fails_with_a_clear_reason(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        committed: sessionmaker[Session],
        notify_settings: Settings,
    ) -> None:
        member = make_member(phone="+358401234567")
        alert_id = enqueue_committed(member)
        make_worker(notify_settings.model_copy(update={"sms_base_url": None})).run_once()
        [row] = deliveries(committed, alert_id)
        assert row.state == "failed"
        assert "ERN_SMS_BASE_URL" in (row.last_error or "")


class TestAllChannels:
    def test_each_channel_of_a_member_is_delivered(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        sms_gateway: HttpReceiver,
        smtp_server: SmtpInbox,
        committed: sessionmaker[Session],
    ) -> None:
        member = make_member(webhook_url=webhook.url, email="r@example.org", phone="+358401111111")
        alert_id = enqueue_committed(member)
        assert make_worker().run_once() == 3
        assert (len(webhook.requests), len(sms_gateway.requests), len(smtp_server.messages)) == (
            1,
            1,
            1,
        )
        assert {r.state for r in deliveries(committed, alert_id)} == {"sent"}

    def test_contact_removed_before_sending_fails_that_channel(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        settings: Settings,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        with transaction(committed) as session:
            row = session.get(Member, member.id)
            assert row is not None
            row.contact_ciphertext = contact_cipher(settings).encrypt({"email": "r@example.org"})
        make_worker().run_once()
        [row] = deliveries(committed, alert_id)
        assert (row.state, row.last_error) == ("failed", "the member has no webhook URL any more")
        assert webhook.requests == []

    def test_a_changed_contact_reaches_the_same_worker_s_next_batch(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
        notify_settings: Settings,
    ) -> None:
        # The worker keeps decrypted contacts and members' keys: neither may go stale.
        member = make_member(webhook_url=f"{webhook.url}/old")
        other = make_member(webhook_url=f"{webhook.url}/other")
        worker = make_worker()
        enqueue_committed(member, other)
        assert worker.run_once() == 2
        with transaction(committed) as session:
            row = session.get(Member, member.id)
            assert row is not None
            row.contact_ciphertext = contact_cipher(notify_settings).encrypt(
                {"webhook_url": f"{webhook.url}/new"}
            )
        alert_id = enqueue_committed(member, other)
        assert worker.run_once() == 2
        assert sorted(r.path for r in webhook.requests) == ["/new", "/old", "/other", "/other"]
        assert {r.state for r in deliveries(committed, alert_id)} == {"sent"}
        for request in webhook.requests:
            owner = other if request.path == "/other" else member
            stranger = member if owner is other else other
            signature = request.headers["x-ern-signature"]
            key = webhook_signing_key(notify_settings, owner.id)
            assert verify_signature(key, request.body, signature)
            assert not verify_signature(
                webhook_signing_key(notify_settings, stranger.id), request.body, signature
            )

    def test_cancelled_rows_are_not_sent(
        self,
        make_member,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        committed: sessionmaker[Session],
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        with transaction(committed) as session:
            assert cancel(session, alert_id=alert_id, message_kind="alert") == 1
        assert make_worker().run_once() == 0
        assert deliveries(committed, alert_id)[0].state == "cancelled"
        assert webhook.requests == []

    def test_deleting_a_member_deletes_its_deliveries(
        self,
        make_member,
        enqueue_committed,
        committed: sessionmaker[Session],
        webhook: HttpReceiver,
    ) -> None:
        member = make_member(webhook_url=webhook.url)
        alert_id = enqueue_committed(member)
        assert len(deliveries(committed, alert_id)) == 1
        with transaction(committed) as session:
            session.delete(session.get(Member, member.id))
        assert deliveries(committed, alert_id) == []


class TestBackoff:
    def test_grows_exponentially_with_jitter_up_to_the_cap(self, settings: Settings) -> None:
        s = settings.model_copy(update={"backoff_base_s": 1.0, "backoff_cap_s": 60.0})
        rng = random.Random(7)
        for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (30, 60.0)]:
            delays = [backoff_s(attempt, s, rng=rng) for _ in range(200)]
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            assert len(set(delays)) > 100  # jittered, so retries of many rows spread out

    def test_retry_after_is_a_floor_clamped_to_the_cap(self, settings: Settings) -> None:
        s = settings.model_copy(update={"backoff_base_s": 1.0, "backoff_cap_s": 60.0})
        assert backoff_s(1, s, retry_after_s=30) == 30
        assert backoff_s(1, s, retry_after_s=3600) == 60

    def test_retry_after_parsing(self) -> None:
        assert parse_retry_after("120", now=START) == 120
        later = format_datetime(START + timedelta(seconds=45), usegmt=True)
        assert parse_retry_after(later, now=START) == 45
        earlier = format_datetime(START - timedelta(seconds=45), usegmt=True)
        assert parse_retry_after(earlier, now=START) == 0
        assert parse_retry_after("soon", now=START) is None
        assert parse_retry_after(None, now=START) is None


class TestScrub:
    def test_destinations_never_reach_error_texts(self) -> None:
        text = scrub(
            "550 5.1.1 <bob@example.org>: no mailbox; see https://h.test/x; +358 40 123 4567",
            "bob@example.org",
        )
        assert "bob" not in text and "h.test" not in text and "4567" not in text
        assert text.startswith("550 5.1.1")


class TestDeliveriesRoute:
    @pytest.fixture
    def api(self, notify_settings: Settings, engine: Engine, committed: sessionmaker[Session]):  # type: ignore[no-untyped-def]
        from fastapi.testclient import TestClient

        from api.graphs import GraphStore
        from api.main import create_app
        from api.notify.router import router

        app = create_app(
            notify_settings, engine=engine, session_factory=committed, graphs=GraphStore()
        )
        if not any(getattr(r, "path", "") == "/v1/deliveries" for r in app.routes):
            app.include_router(router)  # until api/main.py mounts it
        return TestClient(app, raise_server_exceptions=False)

    def test_failed_deliveries_visible_to_coordinators_without_contact_details(
        self,
        api,
        make_member,
        token_for,
        enqueue_committed,
        make_worker,
        webhook: HttpReceiver,
        sms_gateway: HttpReceiver,
        committed: sessionmaker[Session],
    ) -> None:
        member = make_member(webhook_url=f"{webhook.url}/private-hook", phone="+358409999999")
        alert_id = enqueue_committed(member)
        webhook.then(400)
        sms_gateway.then(422)
        make_worker().run_once()
        coordinator = make_member(roles=("coordinator",))
        answer = api.get(
            "/v1/deliveries",
            params={"alert_id": str(alert_id), "state": "failed"},
            headers={"Authorization": f"Bearer {token_for(coordinator)}"},
        )
        assert answer.status_code == 200, answer.text
        from api.notify.schemas import DeliveryPage

        page = DeliveryPage.model_validate(answer.json())
        assert page.total == 2
        assert {(d.channel, d.state, d.last_error) for d in page.items} == {
            ("webhook", "failed", "webhook answered HTTP 400"),
            ("sms", "failed", "SMS gateway answered HTTP 422"),
        }
        assert all(d.member_id == member.id and d.alert_id == alert_id for d in page.items)
        assert "private-hook" not in answer.text and "9999999" not in answer.text
        assert "Help needed" not in answer.text  # the payload stays out too
        with committed() as session:
            actions = session.scalars(
                select(AuditEvent.action).where(AuditEvent.actor_id == coordinator.id)
            ).all()
        assert actions == ["delivery.list"]

        sent = api.get(
            "/v1/deliveries",
            params={"alert_id": str(alert_id), "state": "sent"},
            headers={"Authorization": f"Bearer {token_for(coordinator)}"},
        )
        assert sent.json()["total"] == 0

    def test_members_and_anonymous_callers_are_refused(self, api, make_member, token_for) -> None:
        member = make_member()
        answer = api.get("/v1/deliveries", headers={"Authorization": f"Bearer {token_for(member)}"})
        assert answer.status_code == 403
        assert answer.json()["error"] == "RoleRequired"
        assert api.get("/v1/deliveries").status_code == 401

    def test_bad_filters_are_422(self, api, make_member, token_for) -> None:
        coordinator = make_member(roles=("coordinator",))
        headers = {"Authorization": f"Bearer {token_for(coordinator)}"}
        assert (
            api.get("/v1/deliveries", params={"state": "lost"}, headers=headers).status_code == 422
        )
        assert (
            api.get("/v1/deliveries", params={"alert_id": "x"}, headers=headers).status_code == 422
        )


def test_payload_round_trips_as_json(
    make_member,
    enqueue_committed,
    committed: sessionmaker[Session],
    webhook: HttpReceiver,
) -> None:
    member = make_member(webhook_url=webhook.url)
    alert_id = enqueue_committed(member)
    [row] = deliveries(committed, alert_id)
    assert json.loads(json.dumps(row.payload))["alert"]["alert_id"] == str(alert_id)
