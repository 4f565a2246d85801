"""Answering alerts by SMS: a stand-in gateway signs and posts replies exactly as Twilio does."""

from __future__ import annotations

import random
import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from api.alerts.escalation import purge_expired
from api.alerts.models import AlertResponder
from api.members.crypto import phone_index
from api.members.models import Member
from api.notify.worker import OutboxWorker
from api.sms.models import SmsInbound
from api.sms.service import NOT_A_MEMBER, NOTHING, UNKNOWN, twilio_signature
from tests.alerts.helpers import post_alert
from tests.api.factories import auth
from tests.notify.conftest import (
    SMS_SID,
    SMS_TOKEN,
    HttpReceiver,
    sms_gateway,  # noqa: F401  (fixture: a Twilio Messages API)
)

HINT = "Reply 1 to go, 2 if you can't"


class Gateway:
    """Twilio's side of an inbound SMS: the form it posts and X-Twilio-Signature over it."""

    def __init__(self, client: TestClient, *, url: str, token: str = SMS_TOKEN) -> None:
        self.client = client
        self.url = url
        self.token = token

    def params(self, sender: str, body: str, sid: str) -> list[tuple[str, str]]:
        # The fields Twilio sends with every inbound message (a subset is enough to sign).
        return [
            ("ToCountry", "FI"),
            ("SmsMessageSid", sid),
            ("NumMedia", "0"),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", "+358400000000"),
            ("NumSegments", "1"),
            ("MessageSid", sid),
            ("AccountSid", SMS_SID),
            ("From", sender),
            ("ApiVersion", "2010-04-01"),
        ]

    def post(
        self, sender: str, body: str, *, sid: str | None = None, signature: str | None = "ok"
    ) -> Any:
        sid = sid or "SM" + uuid.uuid4().hex
        params = self.params(sender, body, sid)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signature == "ok":
            headers["X-Twilio-Signature"] = twilio_signature(self.token, self.url, params)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        return self.client.post("/v1/sms/inbound", content=urlencode(params), headers=headers)

    def reply(self, sender: str, body: str, *, sid: str | None = None) -> str:
        res = self.post(sender, body, sid=sid)
        assert res.status_code == 200, res.text
        assert res.headers["content-type"].startswith("text/xml")
        root = ET.fromstring(res.text)
        assert root.tag == "Response"
        [message] = root.findall("Message")
        return message.text or ""


def phone() -> str:
    return "+35840" + "".join(random.choices("0123456789", k=7))


@pytest.fixture
def sms_settings(settings, sms_gateway: HttpReceiver):  # noqa: F811
    return settings.model_copy(
        update={
            "sms_base_url": sms_gateway.url,
            "sms_account_sid": SMS_SID,
            "sms_auth_token": SecretStr(SMS_TOKEN),
            "sms_from": "+358400000000",
        }
    )


@pytest.fixture
def sms_api(sms_settings, graphs, engine, session_factory, clock) -> TestClient:
    from api.main import create_app

    app = create_app(
        sms_settings, engine=engine, session_factory=session_factory, graphs=graphs, clock=clock
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def gateway(sms_api) -> Gateway:
    return Gateway(sms_api, url="http://testserver/v1/sms/inbound")


@pytest.fixture
def people(site, place) -> list[tuple[Member, str, str]]:
    """Three responders reachable by SMS only, nearest first: (member, token, phone)."""
    out = []
    for node in site.nodes_by_time()[10:40:10]:
        number = phone()
        member, token = place(site, node, contact={"phone": number})
        out.append((member, token, number))
    return out


def raise_alert(client: TestClient, token: str, site: Any, needed: int = 1) -> str:
    body = {"location": site.point(), "kind": "personal", "needed": needed}
    res = post_alert(client, token, body, key=str(uuid.uuid4()))
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def state(db: Any, alert_id: str, member: Member) -> str:
    row = db.scalars(
        select(AlertResponder)
        .where(
            AlertResponder.alert_id == uuid.UUID(alert_id), AlertResponder.member_id == member.id
        )
        .execution_options(populate_existing=True)
    ).one()
    return str(row.state)


class TestSignature:
    def test_the_signature_is_twilios_published_example(self):
        # https://www.twilio.com/docs/usage/security#validating-requests (example request).
        params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        url = "https://mycompany.com/myapp.php?foo=1&bar=2"
        assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        assert twilio_signature("12345", url, params[::-1]) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

    def test_missing_wrong_or_other_url_signature_is_403_and_changes_nothing(
        self, sms_api, gateway, db, site, people, make_member
    ):
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        alert_id = raise_alert(sms_api, requester, site)
        before = db.scalar(select(func.count()).select_from(SmsInbound))
        other_url = Gateway(sms_api, url="https://elsewhere.example/v1/sms/inbound")
        other_token = Gateway(sms_api, url=gateway.url, token="not-the-token")
        for res in (
            gateway.post(number, "1", signature=None),
            gateway.post(number, "1", signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            other_url.post(number, "1"),
            other_token.post(number, "1"),
        ):
            assert res.status_code == 403, res.text
            assert res.json()["error"] == "BadSignature"
        assert state(db, alert_id, member) == "notified"
        assert db.scalar(select(func.count()).select_from(SmsInbound)) == before

    def test_a_tampered_body_is_403(self, sms_api, gateway, people):
        (_, _, number), *_ = people
        params = gateway.params(number, "2", "SMx")
        signature = twilio_signature(SMS_TOKEN, gateway.url, params)
        tampered = [(k, "1" if k == "Body" else v) for k, v in params]
        res = sms_api.post(
            "/v1/sms/inbound",
            content=urlencode(tampered),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert res.status_code == 403

    def test_with_a_public_url_that_url_is_the_signed_one(
        self, sms_settings, graphs, engine, session_factory, clock, site, people, make_member, db
    ):
        from api.main import create_app

        public = sms_settings.model_copy(update={"public_url": "https://ern.example.org/"})
        app = create_app(
            public, engine=engine, session_factory=session_factory, graphs=graphs, clock=clock
        )
        client = TestClient(app, raise_server_exceptions=False)
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        alert_id = raise_alert(client, requester, site)
        local = Gateway(client, url="http://testserver/v1/sms/inbound")
        assert local.post(number, "1").status_code == 403
        signed = Gateway(client, url="https://ern.example.org/v1/sms/inbound")
        assert signed.reply(number, "1").startswith("ern: accepted")
        assert state(db, alert_id, member) == "accepted"


class TestReplies:
    def test_the_alert_sms_goes_out_through_the_outbox_and_a_1_accepts_it(
        self,
        sms_api,
        sms_settings,
        gateway,
        db,
        site,
        people,
        make_member,
        clock,
        session_factory,
        sms_gateway: HttpReceiver,  # noqa: F811
    ):
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        alert_id = raise_alert(sms_api, requester, site)
        with OutboxWorker(session_factory, sms_settings, clock=clock, listen=False) as outbox:
            outbox.run_once()
        sent = {r.form()["To"]: r.form()["Body"] for r in sms_gateway.requests}
        assert number in sent
        assert sent[number].endswith(HINT)
        assert all(body.endswith(HINT) for body in sent.values())
        lat, lon = site.lat, site.lon
        place = f"{lat:.5f}, {lon:.5f}"
        assert place in sent[number]
        reply = gateway.reply(number, " 1 ")
        assert reply == f"ern: accepted, thank you. Go to (lat, lon): {place}."
        assert state(db, alert_id, member) == "accepted"

    @pytest.mark.parametrize("word", ["1", "yes", "Y", "  OK ", "Yes.", "y\n"])
    def test_every_accept_form(self, sms_api, gateway, db, site, people, make_member, word):
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        alert_id = raise_alert(sms_api, requester, site)
        assert gateway.reply(number, word).startswith("ern: accepted")
        assert state(db, alert_id, member) == "accepted"

    @pytest.mark.parametrize("word", ["2", "no", "N", " No "])
    def test_every_decline_form(self, sms_api, gateway, db, site, people, make_member, word):
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        alert_id = raise_alert(sms_api, requester, site)
        assert gateway.reply(number, word) == "ern: declined. Thank you, you are not expected."
        assert state(db, alert_id, member) == "declined"

    def test_the_same_message_sid_twice_has_its_effect_once(
        self, sms_api, gateway, db, site, people, make_member
    ):
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        alert_id = raise_alert(sms_api, requester, site, needed=2)
        first = gateway.reply(number, "1", sid="SMretry1")
        # In between the member withdraws in the app; the gateway's retry must not re-accept.
        res = sms_api.post(
            f"/v1/alerts/{alert_id}/responses",
            json={"answer": "decline"},
            headers=auth(people[0][1]),
        )
        assert res.status_code == 200
        again = gateway.reply(number, "1", sid="SMretry1")
        assert again == first
        assert state(db, alert_id, member) == "declined"
        rows = db.scalars(select(SmsInbound).where(SmsInbound.message_sid == "SMretry1")).all()
        assert len(rows) == 1

    def test_the_newest_notification_is_the_one_answered(
        self, sms_api, gateway, db, site, people, make_member, clock
    ):
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        older = raise_alert(sms_api, requester, site, needed=2)
        clock.advance(30)
        newer = raise_alert(sms_api, requester, site, needed=2)
        assert gateway.reply(number, "2").startswith("ern: declined")
        assert state(db, newer, member) == "declined"
        assert state(db, older, member) == "notified"

    def test_a_closed_alert_says_so(self, sms_api, gateway, db, site, people, make_member):
        (member, _, number), *_ = people
        _, requester = make_member(roles=())
        alert_id = raise_alert(sms_api, requester, site)
        assert (
            sms_api.post(f"/v1/alerts/{alert_id}/close", headers=auth(requester)).status_code == 200
        )
        assert gateway.reply(number, "1") == "ern: that alert is closed. Thank you."
        assert state(db, alert_id, member) == "notified"

    def test_nothing_to_answer_and_unknown_numbers(self, gateway, people):
        (_, _, number), *_ = people
        assert gateway.reply(number, "1") == (
            "ern: nothing to answer, no alert is waiting for your reply."
        )
        stranger = gateway.reply(phone(), "1")
        assert stranger == "ern: no member can answer alerts from this number."
        # The same answer whatever the text: nothing tells whether the number is known.
        assert gateway.reply(phone(), "stop") == stranger
        assert gateway.reply("not a number", "yes") == stranger
        assert gateway.reply(number, "maybe").startswith("ern: reply 1 to go")

    def test_stop_snoozes_until_resumed(
        self, sms_api, gateway, db, site, people, make_member, clock
    ):
        (member, token, number), *_ = people
        paused = gateway.reply(number, " STOP ")
        assert paused == "ern: alerts paused until you resume them in the app."
        _, requester = make_member(roles=())
        clock.advance(8 * 24 * 3600)  # longer than any timed snooze
        raise_alert(sms_api, requester, site)
        ranked = db.scalar(
            select(func.count())
            .select_from(AlertResponder)
            .where(AlertResponder.member_id == member.id)
        )
        assert ranked == 0
        assert gateway.reply(number, "1").startswith("ern: nothing to answer")
        assert sms_api.delete("/v1/members/me/snooze", headers=auth(token)).status_code == 204
        alert_id = raise_alert(sms_api, requester, site)
        assert state(db, alert_id, member) == "notified"

    def test_processed_sids_expire_with_the_alert_retention(
        self, gateway, db, people, settings, clock
    ):
        (_, _, number), *_ = people
        gateway.reply(number, "1", sid="SMold")
        clock.advance(settings.alert_retention_days * 86400 + 1)
        purged = purge_expired(db, settings, now=clock.now())
        assert purged.sms_replies >= 1
        assert db.get(SmsInbound, "SMold") is None

    def test_the_phone_index_is_keyed_not_a_plain_hash(self, settings, people, db):
        import hashlib

        (member, _, number), *_ = people
        stored = db.get(Member, member.id).phone_index
        assert stored == phone_index(settings, number)
        assert stored != hashlib.sha256(number.encode()).digest()
        other = settings.model_copy(update={"secret_key": SecretStr("x" * 40)})
        assert phone_index(other, number) != stored


INBOUND_URL = "http://testserver/v1/sms/inbound"


def post_form(client: TestClient, params: list[tuple[str, str]]) -> Any:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature(SMS_TOKEN, INBOUND_URL, params),
    }
    return client.post("/v1/sms/inbound", content=urlencode(params), headers=headers)


def twiml_messages(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(answer.text)
    assert root.tag == "Response"
    return [m.text or "" for m in root.findall("Message")]


class TestMalformedForms:
    """Forms a gateway may post: always TwiML, never a 500 (Twilio's extra fields are normal)."""

    @pytest.mark.parametrize(
        "params",
        [
            [],
            [("Body", "1"), ("From", "+358401234567")],
            [("MessageSid", ""), ("Body", "1"), ("From", "+358401234567")],
            [("MessageSid", "SM" + "x" * 5000), ("Body", "1"), ("From", "+358401234567")],
            [("MessageSid", "SM\u00e9" * 1000), ("Body", "1"), ("From", "+358401234567")],
            [("MessageSid", "SM\x00nul"), ("Body", "1"), ("From", "+358401234567")],
            [("MessageSid", "SM1nofrom"), ("Body", "1")],
            [("MessageSid", "SM1emptyfrom"), ("Body", "1"), ("From", "")],
        ],
        ids=[
            "empty",
            "no-sid",
            "empty-sid",
            "long-sid",
            "wide-sid",
            "nul-sid",
            "no-from",
            "empty-from",
        ],
    )
    def test_a_form_that_is_not_an_inbound_message_gets_an_empty_answer(
        self, sms_api: TestClient, params: list[tuple[str, str]]
    ) -> None:
        # No reply: there is no message to answer, or no one to send the answer to.
        assert twiml_messages(post_form(sms_api, params)) == []

    @pytest.mark.parametrize(
        ("sender", "body"),
        [
            ("+358401234567", ""),  # a picture message has an empty Body
            ("+358401234567", "\x00\x01 1"),
            ("not a number", "1"),
            ("+358\x0040", "yes"),
            ("+35840" + "9" * 3000, "1"),
        ],
        ids=["empty-body", "control-chars", "not-a-number", "nul-in-number", "long-number"],
    )
    def test_odd_values_get_a_reply_not_an_error(
        self, gateway: Gateway, sender: str, body: str
    ) -> None:
        answer = gateway.post(sender, body)
        assert twiml_messages(answer) in ([NOT_A_MEMBER], [UNKNOWN])

    def test_fields_twilio_adds_are_taken(
        self, sms_api: TestClient, gateway: Gateway, people: Any
    ) -> None:
        _, _, number = people[0]
        params = gateway.params(number, "hello", "SM" + "a" * 32)
        params += [
            ("FromCity", "HELSINKI"),
            ("FromCountry", "FI"),
            ("OptOutType", "HELP"),
            ("AddOns", '{"status":"successful","results":{}}'),
            ("MediaUrl0", "https://api.twilio.com/media/1"),
            ("NumMedia", "not a count"),
            ("Body", "1"),  # a repeated name: the last one counts
        ]
        # The member is found by number and the last Body's "1" read: no alert waits for them.
        assert twiml_messages(post_form(sms_api, params)) == [NOTHING]
