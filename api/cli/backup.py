"""`ern db backup` / `ern db restore`: the pg_dump and pg_restore runs docs/operations.md shows."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

# The one place these flags live: the commands below run them, docs/operations.md quotes
# them (tests/e2e/test_backup_restore.py checks that the two agree).
# PostGIS's spatial_ref_sys holds only its own SRIDs (ern uses 4326): its rows stay out, since
# only a superuser may write them, and the restore's CREATE EXTENSION brings them back anyway.
PG_DUMP_FLAGS = ("--format=custom", "--exclude-table-data=spatial_ref_sys", "--no-password")
# One transaction, stopping at the first error: a failed restore leaves the database empty.
# Ownership and grants are left out: the restoring role owns what it restores, and the
# service role's grants are applied afresh (docs/operations.md, "Database roles"), so a dump
# restores the same way on its own server and on a new one where those roles differ. No
# comments: the only one is PostGIS's, which only the extension's owner (a superuser) may set.
PG_RESTORE_FLAGS = (
    "--exit-on-error",
    "--single-transaction",
    "--no-owner",
    "--no-privileges",
    "--no-comments",
    "--no-password",
)


class BackupError(RuntimeError):
    """pg_dump or pg_restore cannot run or failed; the message says why."""


def libpq_url(url: str) -> tuple[str, str | None]:
    """A libpq URL for the pg_* tools (no SQLAlchemy driver, no password) and the password.

    The password travels in PGPASSWORD, never on a command line that `ps` shows.
    """
    parsed = make_url(url)
    password = parsed.password if isinstance(parsed.password, str) else None
    plain = parsed.set(drivername="postgresql")._replace(password=None)
    rendered = plain.render_as_string(hide_password=False)
    # The embedded cluster's ?host=/path/var/run reads better unescaped (libpq takes both).
    base, _, query = rendered.partition("?")
    return (f"{base}?{query.replace('%2F', '/')}" if query else base), password


def pg_dump_command(url: str, file: Path) -> list[str]:
    """pg_dump of the whole database ``url`` (PostGIS extension, schema, data) into ``file``."""
    return ["pg_dump", *PG_DUMP_FLAGS, f"--file={file}", url]


def pg_restore_command(url: str, file: Path) -> list[str]:
    """pg_restore of ``file`` into the existing, empty database ``url``."""
    return ["pg_restore", *PG_RESTORE_FLAGS, f"--dbname={url}", str(file)]


def _run(command: list[str], password: str | None) -> None:
    if shutil.which(command[0]) is None:
        msg = f"{command[0]} not found: install the PostgreSQL client (postgresql-client)"
        raise BackupError(msg)
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        msg = f"{shlex.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}"
        raise BackupError(msg)


def backup(url: str, file: Path) -> list[str]:
    """Dump database ``url`` to ``file`` (written next to it first, renamed when complete).

    The dump holds home zones, routes and the audit trail in the clear, so it is made
    readable by its owner only whatever the umask, and a failed dump leaves no part behind.
    """
    plain, password = libpq_url(url)
    partial = file.with_name(file.name + ".partial")
    command = pg_dump_command(plain, partial)
    # pg_dump truncates an existing file and keeps its mode: create it 0600 first.
    try:
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        msg = f"cannot write {partial}: {exc.strerror or exc}"
        raise BackupError(msg) from None
    try:
        _run(command, password)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(file)
    return pg_dump_command(plain, file)


def ern_tables(url: str) -> list[str]:
    """The tables of the public schema apart from PostGIS's own (empty: a restore may go there)."""
    plain, password = libpq_url(url)
    with psycopg.connect(plain, password=password) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'spatial_ref_sys' ORDER BY tablename"
        ).fetchall()
    return [str(row[0]) for row in rows]


def restore(url: str, file: Path) -> list[str]:
    """Restore ``file`` into database ``url``, which must exist and hold no tables yet."""
    if not file.is_file():
        msg = f"no dump at {file}"
        raise BackupError(msg)
    plain, password = libpq_url(url)
    try:
        tables = ern_tables(url)
    except psycopg.Error as exc:
        msg = f"cannot connect to the target database: {exc}".strip()
        raise BackupError(msg) from None
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        msg = f"the target database is not empty (tables {shown}): restore into a new database"
        raise BackupError(msg)
    command = pg_restore_command(plain, file)
    _run(command, password)
    return command
