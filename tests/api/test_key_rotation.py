"""`ern admin rotate-secret-key`: contacts re-keyed, phone index recomputed, webhook owners told."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from api import database
from api.cli import app as ern
from api.members import service
from api.members.crypto import contact_cipher, phone_index
from api.members.errors import ContactUnreadable
from api.members.models import AuditEvent, Member
from api.members.rotation import KEY_CHANGED, WEBHOOK_KEY_PATH
from api.members.schemas import MemberCreate
from api.notify.channels import SIGNATURE_HEADER, verify_signature
from api.notify.models import Delivery
from api.notify.worker import OutboxWorker
from api.settings import Settings
from api.sms.service import NOT_A_MEMBER, STOPPED, handle_reply
from tests.api.factories import auth, member_body
from tests.e2e.support import Receiver

OLD = "old-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
NEW = "new-secret-key-zyxwvutsrqponmlkjihgfedcba9876543210"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def template(database_url: str) -> Iterator[str]:
    """A migrated, empty database that each test copies (rotation touches every member)."""
    name = f"ern_rotate_tpl_{uuid.uuid4().hex[:8]}"
    admin = _libpq(make_url(database_url).set(database="postgres").render_as_string(False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    database.upgrade(url)
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def rotation_url(database_url: str, template: str) -> Iterator[str]:
    name = f"ern_rotate_{uuid.uuid4().hex[:8]}"
    admin = _libpq(make_url(database_url).set(database="postgres").render_as_string(False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')  # type: ignore[arg-type]
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _settings(url: str, key: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=url,
        secret_key=key,
        var_dir=tmp_path / "var",
        run_workers=False,
        timezone="Europe/Helsinki",
        webhook_allow_private=True,
    )


@pytest.fixture
def factory(rotation_url: str) -> Iterator[sessionmaker[Session]]:
    engine: Engine = database.make_engine(rotation_url, pool_size=2)
    yield database.make_session_factory(engine)
    engine.dispose()


def _seed(
    factory: sessionmaker[Session], settings: Settings, hook: str, graphs: Any
) -> dict[str, Any]:
    """Under the old key: two members with webhooks, one with e-mail only, one without contact."""
    contacts: dict[str, dict[str, str] | None] = {
        "hooked": {"webhook_url": hook, "phone": "+358401110001", "email": "h@example.org"},
        "hooked2": {"webhook_url": hook + "/2"},
        "mailed": {"email": "m@example.org", "phone": "+358401110003"},
        "silent": None,
    }
    made: dict[str, Any] = {}
    with database.transaction(factory) as session:
        for handle, contact in contacts.items():
            body = member_body(handle, **({"contact": contact} if contact else {}))
            member, token = service.create_member(
                session, settings, MemberCreate.model_validate(body), actor=None, graphs=graphs
            )
            made[handle] = {"id": member.id, "token": token, "contact": contact}
    return made


def _rows(factory: sessionmaker[Session]) -> dict[str, tuple[bytes | None, bytes | None, Any]]:
    with factory() as session:
        members = session.scalars(select(Member)).all()
        return {m.handle: (m.contact_ciphertext, m.phone_index, m.updated_at) for m in members}


def _rotate(
    factory: sessionmaker[Session],
    tmp_path: Path,
    *args: str,
    new: str = NEW,
    old: str | None = OLD,
    old_env: str | None = None,
) -> Result:
    """The command as an operator runs it, once the service's connections are closed."""
    engine: Engine = factory.kw["bind"]
    engine.dispose()
    env: dict[str, str | None] = {
        "ERN_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "ERN_SECRET_KEY": new,
        "ERN_VAR_DIR": str(tmp_path / "var"),
        "ERN_OLD_SECRET_KEY": old_env,
    }
    command = ["admin", "rotate-secret-key", *args]
    if old is not None:
        key_file = tmp_path / "old_key"
        key_file.write_text(old + "\n")
        command += ["--old-key-file", str(key_file)]
    return CliRunner().invoke(ern, command, env=env)


class TestRotateSecretKey:
    def test_contacts_decrypt_with_the_new_key_and_no_longer_with_the_old(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        old, new = _settings(rotation_url, OLD, tmp_path), _settings(rotation_url, NEW, tmp_path)
        made = _seed(factory, old, "http://127.0.0.1:9/hook", graphs)
        before = _rows(factory)
        done = _rotate(factory, tmp_path)
        assert done.exit_code == 0, done.stderr
        assert "re-encrypted the contact details of 3 member(s)" in done.stdout
        after = _rows(factory)
        for handle, member in made.items():
            ciphertext, _, updated_at = after[handle]
            assert updated_at == before[handle][2]  # the details did not change, only their key
            if member["contact"] is None:
                assert ciphertext is None
                continue
            assert ciphertext != before[handle][0]
            assert contact_cipher(new).decrypt(ciphertext) == member["contact"]
            with pytest.raises(ContactUnreadable):
                contact_cipher(old).decrypt(ciphertext)
        # A coordinator's read through the app decrypts with the new key.
        app = _app(new, factory)
        coordinator = _coordinator(factory, new)
        read = app.get(f"/v1/members/{made['hooked']['id']}", headers=auth(coordinator))
        assert read.status_code == 200, read.text
        assert read.json()["contact"]["phone"] == "+358401110001"
        # Running it again with the same old key is refused: it no longer decrypts anything.
        after = _rows(factory)
        again = _rotate(factory, tmp_path)
        assert again.exit_code == 1
        assert "does not decrypt the contact details of 3 of 3 members" in again.stderr
        assert "was this rotation done already?" in again.stderr
        assert _rows(factory) == after

    def test_the_output_names_no_key_and_no_contact_detail(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        made = _seed(
            factory, _settings(rotation_url, OLD, tmp_path), "http://127.0.0.1:9/hook", graphs
        )
        secrets = {OLD, NEW} | {
            value for m in made.values() for value in (m["contact"] or {}).values()
        }
        refused = _rotate(factory, tmp_path, old="wrong-secret-key-0123456789abcdefghijklmnopq")
        done = _rotate(factory, tmp_path)
        again = _rotate(factory, tmp_path)
        assert (refused.exit_code, done.exit_code, again.exit_code) == (1, 0, 1)
        for result in (refused, done, again):
            shown = result.stdout + result.stderr
            assert shown and not [s for s in secrets if s in shown]

    def test_sms_replies_still_find_the_member(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        old, new = _settings(rotation_url, OLD, tmp_path), _settings(rotation_url, NEW, tmp_path)
        made = _seed(factory, old, "http://127.0.0.1:9/hook", graphs)
        assert _rotate(factory, tmp_path).exit_code == 0
        now = datetime.now(UTC)
        with database.transaction(factory) as session:
            found = handle_reply(
                session, new, sender="+358 40 111 0003", body="stop", sid="SM1", now=now
            )
            # The old key's index no longer matches anyone.
            lost = handle_reply(
                session, old, sender="+358401110003", body="stop", sid="SM2", now=now
            )
        assert (found, lost) == (STOPPED, NOT_A_MEMBER)
        with factory() as session:
            mailed = session.get(Member, made["mailed"]["id"])
            assert mailed is not None and mailed.snoozed_until is not None
            assert mailed.phone_index == phone_index(new, "+358401110003")

    def test_a_wrong_old_key_is_refused_and_changes_nothing(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        _seed(factory, _settings(rotation_url, OLD, tmp_path), "http://127.0.0.1:9/hook", graphs)
        before = _rows(factory)
        wrong = "wrong-secret-key-0123456789abcdefghijklmnopqrstuvw"
        done = _rotate(factory, tmp_path, old=wrong)
        assert done.exit_code == 1
        assert "the old key does not decrypt the contact details of 3 of 3 members" in done.stderr
        assert "nothing was changed" in done.stderr
        assert _rows(factory) == before
        with factory() as session:
            assert session.scalars(select(Delivery)).all() == []
            actions = session.scalars(select(AuditEvent.action)).all()
            assert "secret_key.rotate" not in actions

    @pytest.mark.parametrize(
        ("args", "old", "new", "message"),
        [
            ((), None, NEW, "the old key is needed"),
            ((), OLD, OLD, "the new ERN_SECRET_KEY is the old one"),
            ((), "short", NEW, "placeholder or shorter than 32"),
        ],
        ids=["no-old-key", "same-key", "short-old-key"],
    )
    def test_bad_invocations_are_refused(
        self,
        rotation_url: str,
        factory: sessionmaker[Session],
        tmp_path: Path,
        graphs: Any,
        args: tuple[str, ...],
        old: str | None,
        new: str,
        message: str,
    ) -> None:
        _seed(factory, _settings(rotation_url, OLD, tmp_path), "http://127.0.0.1:9/hook", graphs)
        before = _rows(factory)
        done = _rotate(factory, tmp_path, *args, old=old, new=new)
        assert done.exit_code in (1, 2)
        assert message in done.stderr
        assert _rows(factory) == before

    def test_the_old_key_may_come_from_the_environment_instead(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        made = _seed(
            factory, _settings(rotation_url, OLD, tmp_path), "http://127.0.0.1:9/hook", graphs
        )
        both = _rotate(factory, tmp_path, old_env=OLD)
        assert both.exit_code == 2
        assert "not both" in both.stderr
        done = _rotate(factory, tmp_path, old=None, old_env=OLD)
        assert done.exit_code == 0, done.stderr
        ciphertext = _rows(factory)["hooked2"][0]
        new = _settings(rotation_url, NEW, tmp_path)
        assert contact_cipher(new).decrypt(ciphertext) == made["hooked2"]["contact"]

    def test_it_waits_for_other_clients_to_go(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        made = _seed(
            factory, _settings(rotation_url, OLD, tmp_path), "http://127.0.0.1:9/hook", graphs
        )
        before = _rows(factory)
        with psycopg.connect(_libpq(rotation_url)):  # a server or worker still running
            refused = _rotate(factory, tmp_path)
            assert refused.exit_code == 1
            assert "other client(s) are connected" in refused.stderr
            assert _rows(factory) == before
            forced = _rotate(factory, tmp_path, "--allow-connected")
        assert forced.exit_code == 0, forced.stderr
        ciphertext = _rows(factory)["mailed"][0]
        assert (
            contact_cipher(_settings(rotation_url, NEW, tmp_path)).decrypt(ciphertext)
            == (made["mailed"]["contact"])
        )

    def test_members_with_webhooks_are_told_and_can_verify_the_notice(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        receiver = Receiver()
        try:
            new = _settings(rotation_url, NEW, tmp_path)
            made = _seed(factory, _settings(rotation_url, OLD, tmp_path), receiver.url, graphs)
            done = _rotate(factory, tmp_path)
            assert done.exit_code == 0, done.stderr
            assert "told 2 member(s) with a webhook" in done.stdout
            with factory() as session:
                rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
                actions = session.scalars(select(AuditEvent.action)).all()
            assert actions.count("secret_key.rotate") == 1
            told = {(row.member_id, row.channel) for row in rows}
            hooked, hooked2 = made["hooked"]["id"], made["hooked2"]["id"]
            # Every channel of the members with a webhook; nothing for the others.
            assert told == {
                (hooked, "webhook"),
                (hooked, "email"),
                (hooked, "sms"),
                (hooked2, "webhook"),
            }
            assert {row.message_kind for row in rows} == {KEY_CHANGED}
            assert all(WEBHOOK_KEY_PATH in row.payload["text"] for row in rows)
            # Delivered by a worker holding the new key; the receiver fetches its new key the
            # documented way and verifies the notice with it.
            worker = OutboxWorker(
                factory, new.model_copy(update={"sms_base_url": None}), listen=False
            )
            try:
                worker.run_once()
            finally:
                worker.close()
            receiver.wait_for(2, timeout_s=20)
            app = _app(new, factory)
            for member in (made["hooked"], made["hooked2"]):
                key = app.get(WEBHOOK_KEY_PATH, headers=auth(member["token"]))
                assert key.status_code == 200, key.text
                mine = [
                    (headers, body)
                    for headers, body in receiver.requests
                    if json.loads(body)["delivery_id"].split(":")[1] == str(member["id"])
                ]
                assert len(mine) == 1
                headers, body = mine[0]
                assert json.loads(body)["kind"] == KEY_CHANGED
                signature = headers[SIGNATURE_HEADER.lower()]
                assert verify_signature(bytes.fromhex(key.json()["key"]), body, signature)
        finally:
            receiver.close()


def _app(settings: Settings, factory: sessionmaker[Session]) -> TestClient:
    from api.main import create_app

    engine = factory.kw["bind"]
    app = create_app(settings, engine=engine, session_factory=factory, graphs=None)
    return TestClient(app, raise_server_exceptions=False)


def _coordinator(factory: sessionmaker[Session], settings: Settings) -> str:
    with database.transaction(factory) as session:
        _, token = service.create_coordinator(session, settings, handle="rotation-coord")
    return token


class TestKeyNoticeRetention:
    def test_key_notices_expire_with_the_alert_retention(
        self, rotation_url: str, factory: sessionmaker[Session], tmp_path: Path, graphs: Any
    ) -> None:
        from api.alerts.escalation import purge_expired

        _seed(factory, _settings(rotation_url, OLD, tmp_path), "http://127.0.0.1:9/hook", graphs)
        assert _rotate(factory, tmp_path).exit_code == 0
        new = _settings(rotation_url, NEW, tmp_path)
        retention = timedelta(days=new.alert_retention_days)
        with database.transaction(factory) as session:
            queued = session.scalars(select(Delivery.created_at)).all()
            assert len(queued) == 4
            kept = purge_expired(session, new, now=max(queued) + retention - timedelta(seconds=1))
            assert kept.key_notices == 0
            gone = purge_expired(session, new, now=max(queued) + retention + timedelta(seconds=1))
            assert gone.key_notices == 4
            assert session.scalars(select(Delivery)).all() == []
