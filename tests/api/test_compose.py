"""compose.yaml works the first time: its graph path, its time zone, and a server without graphs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from api.graphs import no_graphs_reason
from api.settings import Settings
from tests.e2e.support import ERN, SECRET, free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = (REPO / "compose.yaml").read_text()


def _env(database_url: str, graph_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERN_")}
    return (
        env
        | {
            "ERN_DATABASE_URL": database_url,
            "ERN_SECRET_KEY": SECRET,
            "ERN_GRAPH_DIR": str(graph_dir),
            "ERN_VAR_DIR": str(graph_dir.parent / "var"),
            "ERN_RUN_WORKERS": "false",
        }
        | extra
    )


class TestComposeFile:
    def test_the_graph_path_in_the_comment_is_the_mounted_one(self) -> None:
        mounts = re.findall(r"^\s*- (\./[^:\s]+):(/[^:\s]+)(?::ro)?\s*$", COMPOSE, re.M)
        graph_dir = re.search(r"^\s*ERN_GRAPH_DIR: (\S+)", COMPOSE, re.M)
        assert graph_dir is not None
        (host,) = [h for h, target in mounts if target == graph_dir.group(1)]
        outs = re.findall(r"^\s*#.*ern graph build .*--out (\S+)", COMPOSE, re.M)
        assert outs and set(outs) == {host}, (outs, host)
        assert host == "./var/graphs"  # where the quick start (the embedded default) builds

    def test_the_timezone_default_is_the_servers(self) -> None:
        default = re.search(r"ERN_TIMEZONE: \$\{ERN_TIMEZONE:-([^}]+)\}", COMPOSE)
        assert default is not None
        assert default.group(1) == Settings.model_fields["timezone"].default


class TestServeWithoutGraphs:
    def test_refuses_and_says_how_to_build_them(self, tmp_path: Path, database_url: str) -> None:
        graph_dir = tmp_path / "graphs"
        graph_dir.mkdir()
        done = subprocess.run(
            [*ERN, "serve", "--port", str(free_port())],
            env=_env(database_url, graph_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert f"ERN_GRAPH_DIR={graph_dir}" in done.stderr
        assert "ern graph build" in done.stderr and "ERN_ALLOW_NO_GRAPHS" in done.stderr
        assert "straight-line" in done.stderr

    def test_starts_when_allowed_and_health_says_so(
        self, tmp_path: Path, database_url: str
    ) -> None:
        graph_dir = tmp_path / "graphs"
        graph_dir.mkdir()
        port = free_port()
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*ERN, "serve", "--port", str(port), "--no-access-log"],
                env=_env(database_url, graph_dir, ERN_ALLOW_NO_GRAPHS="true"),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 90
            body = None
            while time.monotonic() < deadline and body is None:
                assert proc.poll() is None, log.read_text()
                try:
                    body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                except httpx.HTTPError:
                    time.sleep(0.3)
            assert body is not None, log.read_text()
            assert all("unavailable" in v for v in body["graphs"].values()), body
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)

    def test_compiled_graphs_or_a_source_need_no_permission(
        self, tmp_path: Path, graph_dir: Path, graphs: object
    ) -> None:
        assert graphs  # built into graph_dir
        url = "postgresql+psycopg://x@127.0.0.1:1/x"
        empty = tmp_path / "empty"
        assert no_graphs_reason(Settings(database_url=url, graph_dir=empty)) is not None
        assert no_graphs_reason(Settings(database_url=url, graph_dir=graph_dir)) is None
        with_source = Settings(database_url=url, graph_dir=empty, graph_source="x.osm.pbf")
        assert no_graphs_reason(with_source) is None
        assert no_graphs_reason(Settings(graph_dir=empty)) is None  # embedded: builds at start
