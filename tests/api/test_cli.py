"""`ern admin`: coordinators and tokens against the test database through ERN_DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from api.cli import app as ern
from api.members.schemas import MemberRead
from tests.api.factories import auth, unique_handle
from tests.conftest import TEST_SECRET

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "ERN_DATABASE_URL": database_url,
        "ERN_SECRET_KEY": TEST_SECRET,
        "ERN_VAR_DIR": str(tmp_path / "var"),
    }


@pytest.fixture
def handles(engine: Engine) -> Iterator[list[str]]:
    """Handles the test creates for real (committed by the CLI); deleted afterwards."""
    made: list[str] = []
    yield made
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM member WHERE handle = ANY(:h)"), {"h": made})


def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(ern, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


class TestCreateCoordinator:
    def test_prints_a_working_token_on_the_last_line(
        self, env: dict[str, str], handles: list[str], client: TestClient
    ) -> None:
        handle = unique_handle("cli")
        handles.append(handle)
        code, out, _ = _run(env, "admin", "create-coordinator", "--handle", handle)
        assert code == 0, out
        token = out.strip().splitlines()[-1]
        r = client.get("/v1/members/me", headers=auth(token))
        assert r.status_code == 200
        me = MemberRead.model_validate(r.json())
        assert (me.handle, me.roles, me.home_zone) == (handle, ["coordinator"], None)
        assert client.get("/v1/members", headers=auth(token)).status_code == 200

    def test_taken_handle_fails_without_a_token(
        self, env: dict[str, str], handles: list[str]
    ) -> None:
        handle = unique_handle("cli")
        handles.append(handle)
        assert _run(env, "admin", "create-coordinator", "--handle", handle)[0] == 0
        code, out, err = _run(env, "admin", "create-coordinator", "--handle", handle)
        assert code == 1
        assert "is taken" in err
        assert out == ""

    def test_invalid_handle_is_a_usage_error(self, env: dict[str, str]) -> None:
        code, out, err = _run(env, "admin", "create-coordinator", "--handle", "no spaces!")
        assert code == 2
        assert "handle" in err
        assert out == ""

    def test_handle_is_required(self, env: dict[str, str]) -> None:
        code, _, err = _run(env, "admin", "create-coordinator")
        assert code == 2
        assert "--handle" in err

    def test_needs_no_secret_key_as_it_stores_no_contact_details(
        self, env: dict[str, str], handles: list[str]
    ) -> None:
        # Creating a coordinator stores no contact details, so it needs no secret at all.
        handle = unique_handle("cli")
        handles.append(handle)
        code, _, _ = _run(
            {**env, "ERN_SECRET_KEY": ""}, "admin", "create-coordinator", "--handle", handle
        )
        assert code == 0

    @pytest.mark.slow
    def test_works_as_the_installed_console_script(
        self, env: dict[str, str], handles: list[str], client: TestClient
    ) -> None:
        handle = unique_handle("script")
        handles.append(handle)
        ern_bin = Path(sys.executable).parent / "ern"
        command = [str(ern_bin)] if ern_bin.exists() else [sys.executable, "-m", "api.cli"]
        done = subprocess.run(
            [*command, "admin", "create-coordinator", "--handle", handle],
            env={**os.environ, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip().splitlines()[-1]
        assert client.get("/v1/members/me", headers=auth(token)).status_code == 200


class TestTokens:
    def test_rotate_replaces_every_token(
        self, env: dict[str, str], handles: list[str], client: TestClient
    ) -> None:
        handle = unique_handle("cli")
        handles.append(handle)
        old = (
            _run(env, "admin", "create-coordinator", "--handle", handle)[1].strip().splitlines()[-1]
        )
        code, out, _ = _run(env, "admin", "rotate-token", "--handle", handle)
        assert code == 0
        new = out.strip().splitlines()[-1]
        assert new != old
        assert client.get("/v1/members/me", headers=auth(old)).status_code == 401
        assert client.get("/v1/members/me", headers=auth(new)).status_code == 200

    def test_revoke_locks_the_member_out(
        self, env: dict[str, str], handles: list[str], client: TestClient
    ) -> None:
        handle = unique_handle("cli")
        handles.append(handle)
        token = (
            _run(env, "admin", "create-coordinator", "--handle", handle)[1].strip().splitlines()[-1]
        )
        code, out, _ = _run(env, "admin", "revoke-token", "--handle", handle)
        assert (code, out.strip()) == (0, f"revoked 1 token(s) of {handle}")
        assert client.get("/v1/members/me", headers=auth(token)).status_code == 401

    @pytest.mark.parametrize("command", ["rotate-token", "revoke-token"])
    def test_unknown_handle_fails(self, env: dict[str, str], command: str) -> None:
        code, out, err = _run(env, "admin", command, "--handle", unique_handle("nobody"))
        assert code == 1
        assert "no member with handle" in err
        assert out == ""

    def test_cli_actions_are_audited_without_an_actor(
        self, env: dict[str, str], handles: list[str], engine: Engine
    ) -> None:
        handle = unique_handle("cli")
        handles.append(handle)
        _run(env, "admin", "create-coordinator", "--handle", handle)
        _run(env, "admin", "rotate-token", "--handle", handle)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT a.actor_id, a.action FROM audit_event a JOIN member m "
                    "ON m.id = a.subject_id WHERE m.handle = :h ORDER BY a.id"
                ),
                {"h": handle},
            ).all()
        assert [tuple(r) for r in rows] == [(None, "member.create"), (None, "token.rotate")]


class TestSchemaBehind:
    def test_refuses_a_database_without_the_schema(
        self, env: dict[str, str], database_url: str
    ) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        empty = f"{url.database}_empty"
        admin = url.set(drivername="postgresql", database="postgres").render_as_string(
            hide_password=False
        )
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{empty}"')
        try:
            target = url.set(database=empty).render_as_string(hide_password=False)
            code, _, err = _run(
                {**env, "ERN_DATABASE_URL": target}, "admin", "create-coordinator", "--handle", "x"
            )
            assert code == 1
            assert "ern db upgrade" in err
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')
