"""The embedded default: `ern` runs its own PostgreSQL + PostGIS cluster under ERN_VAR_DIR."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from api.embedded import EmbeddedCluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ERN = str(Path(sys.executable).parent / "ern")


@pytest.fixture
def var_dir() -> Iterator[Path]:
    # Under the checkout, not /tmp/pytest-of-root: the cluster runs as the postgres user,
    # who must be able to reach its data directory (as for ./var in the quick start).
    path = REPO / "var" / f"test-embedded-{uuid.uuid4().hex[:8]}"
    yield path
    EmbeddedCluster(path).stop()
    shutil.rmtree(path, ignore_errors=True)


def _ern(var_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERN_")}
    env["ERN_VAR_DIR"] = str(var_dir)
    return subprocess.run([ERN, *args], env=env, capture_output=True, text=True, timeout=180)


def test_db_commands_create_migrate_and_stop_a_private_postgis_cluster(var_dir: Path) -> None:
    started = _ern(var_dir, "db", "start")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    assert str(var_dir.resolve() / "run") in url
    # Only a Unix socket in var/: nothing listens on TCP.
    conf = subprocess.run(
        [
            "psql",
            "-At",
            "-h",
            str(var_dir.resolve() / "run"),
            "-U",
            "postgres",
            "-d",
            "ern",
            "-c",
            "SHOW listen_addresses",
        ],
        capture_output=True,
        text=True,
    )
    assert conf.stdout.strip() == ""

    upgraded = _ern(var_dir, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    made = _ern(var_dir, "admin", "create-coordinator", "--handle", "embedded-coord")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT postgis_lib_version()").fetchone()
        handles = conn.execute("SELECT handle FROM member").fetchall()
    assert handles == [("embedded-coord",)]
    stopped = _ern(var_dir, "db", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not EmbeddedCluster(var_dir).running()
    again = _ern(var_dir, "db", "stop")
    assert "was not running" in again.stdout
