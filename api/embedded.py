"""The embedded default: a private PostgreSQL + PostGIS cluster under var/, run on demand."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "ern"
APT_HINT = "apt-get update && apt-get install -y postgresql-{v}-postgis-3"


class EmbeddedError(RuntimeError):
    """The embedded cluster cannot be set up or started; the message says what to do."""


def pg_bin_dir() -> Path:
    """Newest PostgreSQL server binaries installed (Debian layout or pg_config)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    msg = "PostgreSQL server binaries not found: install them (apt-get install -y postgresql)"
    raise EmbeddedError(msg)


def pg_version(bin_dir: Path) -> str:
    """Major version of the server binaries in ``bin_dir``."""
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[-1].split(".")[0]


def postgis_installed(bin_dir: Path) -> bool:
    """Whether the PostGIS extension files exist for these server binaries."""
    version = pg_version(bin_dir)
    share = Path(f"/usr/share/postgresql/{version}/extension")
    if not share.exists():
        sharedir = subprocess.run(
            [str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True
        ).stdout.strip()
        share = Path(sharedir) / "extension"
    return (share / "postgis.control").exists()


def ensure_postgis(bin_dir: Path, *, install: bool = True) -> None:
    """Install PostGIS with apt when missing and allowed, else say exactly what to install."""
    if postgis_installed(bin_dir):
        return
    version = pg_version(bin_dir)
    hint = APT_HINT.format(v=version)
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"PostGIS is missing; installing it: {hint}", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", f"postgresql-{version}-postgis-3"],
            check=True,
            env=env,
        )
        if postgis_installed(bin_dir):
            return
    msg = f"PostGIS is not installed for PostgreSQL {version}: run `{hint}` as root"
    raise EmbeddedError(msg)


@dataclass(frozen=True)
class EmbeddedCluster:
    """A PostgreSQL cluster in ``var_dir/pg`` listening only on a Unix socket in ``var_dir/run``."""

    var_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.var_dir.resolve() / "pg"

    @property
    def socket_dir(self) -> Path:
        return self.var_dir.resolve() / "run"

    @property
    def log_file(self) -> Path:
        return self.var_dir.resolve() / "pg.log"

    @property
    def _owner(self) -> str | None:
        # PostgreSQL refuses to run as root: hand the cluster to the postgres system user.
        return "postgres" if os.geteuid() == 0 else None

    @property
    def superuser(self) -> str:
        return self._owner or pwd.getpwuid(os.geteuid()).pw_name

    def url(self, database: str = DB_NAME) -> str:
        """SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+psycopg://{self.superuser}@/{database}?host={self.socket_dir}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._owner:
            cmd = ["runuser", "-u", self._owner, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check)

    def _prepare_dirs(self) -> None:
        for d in (self.var_dir.resolve(), self.data_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self._owner:
            entry = pwd.getpwnam(self._owner)
            for d in (self.data_dir, self.socket_dir):
                os.chown(d, entry.pw_uid, entry.pw_gid)
            self.log_file.touch()
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
            probe = self._run("test", "-w", str(self.data_dir), check=False)
            if probe.returncode != 0:
                msg = (
                    f"the {self._owner} user cannot reach {self.data_dir}; put the checkout "
                    f"where {self._owner} may traverse it, or set ERN_DATABASE_URL"
                )
                raise EmbeddedError(msg)
        self.data_dir.chmod(0o700)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        bin_dir = pg_bin_dir()
        if not self.initialised():
            return False
        return (
            self._run(
                str(bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir), check=False
            ).returncode
            == 0
        )

    def start(self, *, install: bool = True) -> str:
        """Initialise (once) and start the cluster, create the ern database; returns its URL."""
        bin_dir = pg_bin_dir()
        ensure_postgis(bin_dir, install=install)
        self._prepare_dirs()
        if not self.initialised():
            print(f"initialising the embedded PostgreSQL cluster in {self.data_dir}", flush=True)
            done = self._run(
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                check=False,
            )
            if done.returncode != 0:
                msg = f"initdb failed: {done.stderr.strip() or done.stdout.strip()}"
                raise EmbeddedError(msg)
        if not self.running():
            opts = f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}'"
            done = self._run(
                str(bin_dir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                opts,
                check=False,
            )
            if done.returncode != 0:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                msg = f"could not start the embedded cluster: {done.stderr.strip()}\n{tail}"
                raise EmbeddedError(msg)
        self._wait_ready(bin_dir)
        self.create_database(DB_NAME)
        return self.url()

    def _wait_ready(self, bin_dir: Path, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", str(self.socket_dir)], capture_output=True
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        msg = f"embedded cluster did not become ready within {timeout_s:.0f} s"
        raise EmbeddedError(msg)

    def create_database(self, name: str) -> None:
        """Create ``name`` with PostGIS if it does not exist yet."""
        import psycopg

        admin = f"host={self.socket_dir} user={self.superuser} dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(
            f"host={self.socket_dir} user={self.superuser} dbname={name}", autocommit=True
        ) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    def stop(self, *, mode: str = "fast") -> bool:
        """Stop the cluster if it runs (``mode``: pg_ctl's smart, fast or immediate, the last a
        crash as far as the data is concerned); returns whether it was running."""
        if not self.running():
            return False
        self._run(str(pg_bin_dir() / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.data_dir))
        return True
