"""The one-call raise path: answer from memory, channels from the presence index, array literals."""

from __future__ import annotations

import math
from datetime import UTC

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import text, update

from api.alerts.models import Alert
from api.database import array_literal
from api.members.models import Member
from tests.alerts.helpers import count_rows, deliveries, post_alert
from tests.api.factories import auth


def body(site, **extra):
    out = {"location": site.point(), "kind": "personal", "needed": 2, "note": 'a "quoted" note'}
    out.update(extra)
    return out


class TestAnswer:
    def test_the_201_equals_what_the_requester_reads_back(self, api, site, crowd, make_member):
        _, token = make_member(roles=())
        res = post_alert(api, token, body(site))
        assert res.status_code == 201, res.text
        read = api.get(f"/v1/alerts/{res.json()['id']}", headers=auth(token))
        assert read.status_code == 200, read.text
        assert res.json() == read.json()
        assert res.json()["notified_count"] == math.ceil(2 / 0.35)

    def test_an_empty_ranking_still_makes_an_alert(self, api, db, site, make_member):
        _, token = make_member(roles=())
        res = post_alert(api, token, body(site, kind="defense"))
        assert res.status_code == 201, res.text
        assert res.json()["notified_count"] == 0
        assert deliveries(db, res.json()["id"]) == []


class TestNotes:
    @hyp_settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(note=st.text(max_size=40))
    def test_any_note_is_201_or_422_and_422_stores_nothing(self, api, db, site, make_member, note):
        _, token = make_member(roles=())
        before = count_rows(db, Alert)
        res = post_alert(api, token, body(site, note=note), key="n")
        assert res.status_code in (201, 422), res.text
        if res.status_code == 422:
            assert "\x00" in note and "NUL" in res.text
            assert count_rows(db, Alert) == before
        else:
            assert res.json()["note"] == note
            assert count_rows(db, Alert) == before + 1

    def test_nul_in_the_note_is_422_naming_it(self, api, db, site, make_member):
        _, token = make_member(roles=())
        before = count_rows(db, Alert)
        res = post_alert(api, token, body(site, note="a\x00b"))
        assert res.status_code == 422, res.text
        assert "note" in res.text and "NUL" in res.text
        assert count_rows(db, Alert) == before


class TestChannels:
    def test_a_changed_contact_is_used_by_the_next_alert(self, api, db, site, place, make_member):
        node = site.nodes_by_time()[3]
        member, member_token = place(site, node)
        _, token = make_member(roles=())
        first = post_alert(api, token, body(site, needed=1), key="a")
        assert first.status_code == 201, first.text
        assert {d.channel for d in deliveries(db, first.json()["id"])} == {"webhook"}
        res = api.patch(
            "/v1/members/me",
            json={"contact": {"email": "x@example.org", "phone": "+358401234567"}},
            headers=auth(member_token),
        )
        assert res.status_code == 200, res.text
        second = post_alert(api, token, body(site, needed=1), key="b")
        assert second.status_code == 201, second.text
        sent = deliveries(db, second.json()["id"])
        assert {d.channel for d in sent} == {"email", "sms"}
        assert {d.member_id for d in sent} == {member.id}
        ids = {d.delivery_id for d in sent}
        assert ids == {f"{second.json()['id']}:{member.id}:{c}:alert" for c in ("email", "sms")}

    def test_an_unreadable_contact_skips_only_that_member(self, api, db, site, place, make_member):
        nodes = site.nodes_by_time()
        broken, _ = place(site, nodes[2])
        fine, _ = place(site, nodes[4])
        db.execute(
            update(Member).where(Member.id == broken.id).values(contact_ciphertext=b"garbage")
        )
        db.flush()
        _, token = make_member(roles=())
        res = post_alert(api, token, body(site, needed=1))
        assert res.status_code == 201, res.text
        sent = deliveries(db, res.json()["id"])
        assert {d.member_id for d in sent} == {fine.id}


@hyp_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00")))
)
def testarray_literals_round_trip_any_text(db, values):
    got = db.execute(text("SELECT CAST(:v AS text[])"), {"v": array_literal(values)}).scalar_one()
    assert got == values


@hyp_settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False)))
def testarray_literals_keep_floats_exact(db, values):
    got = db.execute(
        text("SELECT CAST(:v AS double precision[])"), {"v": array_literal(values)}
    ).scalar_one()
    assert got == values


@hyp_settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.uuids()))
def test_array_literals_keep_uuids(db, values):
    got = db.execute(text("SELECT CAST(:v AS uuid[])"), {"v": array_literal(values)}).scalar_one()
    assert got == values


@hyp_settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ints=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
    texts=st.lists(
        st.one_of(
            st.none(), st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)))
        )
    ),
    times=st.lists(st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)))),
)
def test_array_literals_keep_nulls_ints_and_times(db, ints, texts, times):
    # The outbox records its outcomes this way: NULL errors and sent_at must stay NULL.
    got = db.execute(
        text("SELECT CAST(:i AS bigint[]), CAST(:t AS text[]), CAST(:d AS timestamptz[])"),
        {"i": array_literal(ints), "t": array_literal(texts), "d": array_literal(times)},
    ).one()
    assert list(got) == [ints, texts, times]


class TestPublicUrl:
    def test_messages_link_to_the_public_url_when_set(
        self, settings, graphs, engine, session_factory, clock, db, site, crowd, make_member
    ):
        from api.main import create_app

        public = settings.model_copy(update={"public_url": "https://ern.example.org/"})
        app = create_app(
            public, engine=engine, session_factory=session_factory, graphs=graphs, clock=clock
        )
        client = TestClient(app, raise_server_exceptions=False)
        _, token = make_member(roles=())
        res = post_alert(client, token, body(site, needed=1))
        assert res.status_code == 201, res.text
        alert_id = res.json()["id"]
        link = f"https://ern.example.org/v1/alerts/{alert_id}/responses"
        sent = deliveries(db, alert_id)
        assert sent and all(d.payload["alert"]["respond_url"] == link for d in sent)
        assert all(link in d.payload["text"] for d in sent)
        assert client.post(f"/v1/alerts/{alert_id}/close", headers=auth(token)).status_code == 200
        closing = deliveries(db, alert_id, message_kind="close")
        assert closing and all(d.payload["alert"]["respond_url"] == link for d in closing)

    def test_without_it_links_are_relative(self, api, db, site, crowd, make_member):
        _, token = make_member(roles=())
        alert_id = post_alert(api, token, body(site, needed=1)).json()["id"]
        sent = deliveries(db, alert_id)
        assert sent
        assert all(
            d.payload["alert"]["respond_url"] == f"/v1/alerts/{alert_id}/responses" for d in sent
        )
        assert all("https://" not in d.payload["text"] for d in sent)
