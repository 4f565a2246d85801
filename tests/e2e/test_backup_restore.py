"""docs/operations.md's restore drill: `ern db backup`, `ern db restore`, the grants again."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from api import database
from api.cli.backup import PG_DUMP_FLAGS, PG_RESTORE_FLAGS, BackupError, backup, libpq_url
from api.settings import Settings
from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, auth, full_member_body
from tests.api.test_operations import _statements
from tests.e2e.support import ERN, SECRET, server_env
from tests.paths import REPO

DOC = (REPO / "docs" / "operations.md").read_text()
# Every table the app fills; the restored database must hold the same number of rows in each.
COUNTED = ("member", "member_zone", "member_route", "api_token", "audit_event", "alert", "outbox")


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class Cluster:
    """Uniquely named roles and databases on the test server, all dropped afterwards."""

    admin: str  # libpq URL of the server's maintenance database, as its superuser
    owner: str
    service: str

    def url(self, database_name: str, role: str) -> str:
        base = make_url(self.admin).set(drivername="postgresql+psycopg")
        return base.set(username=role, password=None, database=database_name).render_as_string(
            hide_password=False
        )

    def sql(self, database_name: str, *statements: str) -> None:
        dsn = make_url(self.admin).set(database=database_name).render_as_string(False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def new_database(self, name: str) -> None:
        """docs/operations.md's step 1: an empty database of the owner, with PostGIS."""
        self.sql("postgres", f'CREATE DATABASE "{name}" OWNER "{self.owner}"')
        self.sql(name, "CREATE EXTENSION postgis")

    def grant(self, database_name: str, *, create_role: bool) -> None:
        """The doc's "Database roles" block, run as the owner."""
        statements = _statements(self.service)
        statements = [s.replace(" NOLOGIN", " LOGIN") for s in statements]
        if not create_role:
            statements = [s for s in statements if not s.startswith("CREATE ROLE")]
        else:
            # CREATE ROLE needs the superuser; the rest runs as the owner, as documented.
            self.sql("postgres", statements.pop(0))
        with psycopg.connect(_plain(self.url(database_name, self.owner)), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture
def cluster(database_url: str) -> Iterator[Cluster]:
    tag = uuid.uuid4().hex[:8]
    admin = _plain(make_url(database_url).set(database="postgres").render_as_string(False))
    found = Cluster(admin=admin, owner=f"ern_owner_{tag}", service=f"ern_service_{tag}")
    found.sql("postgres", f'CREATE ROLE "{found.owner}" LOGIN')
    made: list[str] = []
    try:
        yield found
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            names = conn.execute(
                "SELECT datname FROM pg_database WHERE datdba = "
                "(SELECT oid FROM pg_roles WHERE rolname = %s)",
                (found.owner,),
            ).fetchall()
            made.extend(str(row[0]) for row in names)
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
            for role in (found.service, found.owner):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')  # type: ignore[arg-type]


def _ern(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*ERN, *args], env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, f"ern {shlex.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def _app(url: str, graphs: Any, tmp_path: Path) -> tuple[TestClient, Engine]:
    from api.main import create_app

    settings = Settings(
        database_url=url,
        secret_key=SECRET,
        var_dir=tmp_path / "var",
        run_workers=False,
        timezone="Europe/Helsinki",
        webhook_allow_private=True,
    )
    engine = database.make_engine(url, pool_size=2)
    app = create_app(
        settings,
        engine=engine,
        session_factory=database.make_session_factory(engine),
        graphs=graphs,
    )
    return TestClient(app, raise_server_exceptions=False), engine


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(_plain(url)) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index,arg-type]
            for t in COUNTED
        }


def _populate(api: TestClient, coordinator_token: str) -> dict[str, Any]:
    """Members with contacts, zones and routes; an alert with deliveries; audited reads."""
    coord = auth(coordinator_token)
    members: list[dict[str, Any]] = []
    for n in range(4):
        body = full_member_body(f"drill-{n}")
        body["contact"] = {
            "email": f"drill{n}@example.org",
            "phone": f"+35840000000{n}",
            "webhook_url": f"http://127.0.0.1:9/hooks/{n}",
        }
        made = api.post("/v1/members", json=body, headers=coord)
        assert made.status_code == 201, made.text
        members.append(made.json())
    requester = members[0]
    alert = api.post(
        "/v1/alerts",
        json={
            "location": {"type": "Point", "coordinates": [HELSINKI_LON, HELSINKI_LAT]},
            "kind": "personal",
            "needed": 2,
        },
        headers={**auth(requester["token"]), "Idempotency-Key": "drill"},
    )
    assert alert.status_code == 201, alert.text
    for member in members[1:]:
        assert api.get(f"/v1/members/{member['member']['id']}", headers=coord).status_code == 200
    return {"members": members, "alert_id": alert.json()["id"]}


class TestBackupRestore:
    def test_the_doc_shows_the_commands_ern_runs(self) -> None:
        assert " ".join(("pg_dump", *PG_DUMP_FLAGS)) in DOC
        assert " ".join(("pg_restore", *PG_RESTORE_FLAGS)) in DOC
        assert "ern db backup" in DOC
        assert "ern db restore" in DOC

    def test_the_tools_get_a_libpq_url_and_the_password_apart(self) -> None:
        url, password = libpq_url("postgresql+psycopg://owner:s%40cret@db.example.org:5433/ern")
        assert (url, password) == ("postgresql://owner@db.example.org:5433/ern", "s@cret")
        embedded = libpq_url("postgresql+psycopg://postgres@/ern?host=/srv/ern/var/run")
        assert embedded == ("postgresql://postgres@/ern?host=/srv/ern/var/run", None)

    @pytest.mark.slow
    def test_a_restored_database_serves_as_the_original_did(
        self, cluster: Cluster, graphs: Any, graph_dir: Path, tmp_path: Path
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        source, target = f"ern_drill_src_{tag}", f"ern_drill_dst_{tag}"
        cluster.new_database(source)
        owner_env = server_env(cluster.url(source, cluster.owner), graph_dir, tmp_path / "v1")
        _ern(owner_env, "db", "upgrade")
        cluster.grant(source, create_role=True)
        # The service runs as the service role, as docs/operations.md says.
        service_env = {**owner_env, "ERN_DATABASE_URL": cluster.url(source, cluster.service)}
        coordinator = _ern(service_env, "admin", "create-coordinator", "--handle", "drill-coord")
        coordinator_token = coordinator.stdout.strip().splitlines()[-1]
        api, engine = _app(cluster.url(source, cluster.service), graphs, tmp_path)
        try:
            made = _populate(api, coordinator_token)
            before = {m["member"]["handle"]: m["member"] for m in made["members"]}
            first = made["members"][1]["member"]["id"]
            contact = api.get(f"/v1/members/{first}", headers=auth(coordinator_token)).json()
        finally:
            engine.dispose()
        counts = _counts(cluster.url(source, cluster.owner))
        assert counts["outbox"] > 0 and counts["audit_event"] > 0 and counts["alert"] == 1

        dump = tmp_path / "ern.dump"
        backed_up = _ern(owner_env, "db", "backup", str(dump))
        assert dump.stat().st_size > 0 and not dump.with_name("ern.dump.partial").exists()
        assert "pg_dump " + " ".join(PG_DUMP_FLAGS) in backed_up.stdout

        cluster.new_database(target)
        restored = _ern(
            owner_env, "db", "restore", str(dump), "--into", cluster.url(target, cluster.owner)
        )
        assert "pg_restore " + " ".join(PG_RESTORE_FLAGS) in restored.stdout
        cluster.grant(target, create_role=False)

        assert _counts(cluster.url(target, cluster.owner)) == counts
        check = database.make_engine(cluster.url(target, cluster.service), pool_size=1)
        try:
            assert database.schema_status(check)["up_to_date"] is True
        finally:
            check.dispose()

        api, engine = _app(cluster.url(target, cluster.service), graphs, tmp_path)
        try:
            for member in made["members"]:
                me = api.get("/v1/members/me", headers=auth(member["token"]))
                assert me.status_code == 200, me.text
                assert me.json()["handle"] == member["member"]["handle"]
                assert me.json() == before[member["member"]["handle"]] | {
                    "updated_at": me.json()["updated_at"]
                }
            again = api.get(f"/v1/members/{first}", headers=auth(coordinator_token))
            assert again.status_code == 200
            # The contact decrypts with the same ERN_SECRET_KEY after the restore.
            assert again.json()["contact"] == contact["contact"]
            assert again.json()["contact"]["phone"] == "+358400000001"
            requester = made["members"][0]["token"]
            alert = api.get(f"/v1/alerts/{made['alert_id']}", headers=auth(requester))
            assert alert.status_code == 200, alert.text
        finally:
            engine.dispose()

        # The audit trail is append-only again for the service role (grants re-applied), and
        # for the owner too (the trigger came back with the dump).
        audited = _counts(cluster.url(target, cluster.owner))["audit_event"]
        assert audited == counts["audit_event"] + 1  # the coordinator's read just now
        refusals = {cluster.service: "permission denied", cluster.owner: "append-only"}
        for role, refusal in refusals.items():
            with psycopg.connect(_plain(cluster.url(target, role))) as conn:
                for statement in ("UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event"):
                    with pytest.raises(psycopg.Error, match=refusal):
                        conn.execute(statement)  # type: ignore[arg-type]
                    conn.rollback()
        assert _counts(cluster.url(target, cluster.owner))["audit_event"] == audited

        # A second restore into the now full database is refused and changes nothing.
        refused = _ern(
            owner_env,
            "db",
            "restore",
            str(dump),
            "--into",
            cluster.url(target, cluster.owner),
            ok=False,
        )
        assert refused.returncode == 1
        assert "not empty" in refused.stderr
        assert _counts(cluster.url(target, cluster.owner)) == {**counts, "audit_event": audited}


class TestDumpFile:
    """A dump holds members' home zones, routes and audit trail in the clear: owner-only."""

    def test_the_dump_is_readable_by_its_owner_only_whatever_the_umask(
        self, database_url: str, tmp_path: Path
    ) -> None:
        dump = tmp_path / "ern.dump"
        previous = os.umask(0o022)
        try:
            backup(database_url, dump)
        finally:
            os.umask(previous)
        assert dump.stat().st_size > 0
        assert stat.S_IMODE(dump.stat().st_mode) == 0o600

    def test_a_failed_dump_leaves_no_partial_file(self, database_url: str, tmp_path: Path) -> None:
        dump = tmp_path / "ern.dump"
        missing = make_url(database_url).set(database=f"ern_missing_{uuid.uuid4().hex[:8]}")
        with pytest.raises(BackupError, match="failed"):
            backup(missing.render_as_string(hide_password=False), dump)
        assert list(tmp_path.iterdir()) == []
