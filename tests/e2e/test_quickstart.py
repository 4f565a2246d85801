"""The quick start as a user runs it: a port already in use is said before anything starts."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.support import ERN, server_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


class TestBusyPort:
    def test_ern_serve_says_the_port_is_taken_before_serving(
        self, busy_port: int, database_url: str, graph_dir: Path, tmp_path: Path
    ) -> None:
        env = server_env(database_url, graph_dir, tmp_path / "var")
        done = _run([*ERN, "serve", "--port", str(busy_port)], env)
        assert done.returncode == 1
        assert f"cannot listen on 127.0.0.1:{busy_port}" in done.stderr
        assert "--port" in done.stderr
        assert "serving on" not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr

    @pytest.mark.slow
    def test_quickstart_with_a_taken_port_says_so_and_starts_nothing(
        self, busy_port: int, database_url: str, graph_dir: Path, tmp_path: Path
    ) -> None:
        env = server_env(database_url, graph_dir, tmp_path / "var")
        done = _run(["./scripts/quickstart", "--port", str(busy_port)], env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"cannot listen on 127.0.0.1:{busy_port}" in done.stderr
        assert "serving on" not in done.stdout + done.stderr
        assert not (tmp_path / "var").exists()  # no cluster, no secret, no graphs made
