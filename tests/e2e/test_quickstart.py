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


@pytest.mark.slow
def test_ctrl_c_on_the_quick_start_also_stops_its_embedded_postgresql(
    graphs: object, graph_dir: Path
) -> None:
    import os
    import shutil
    import signal
    import uuid

    from api.embedded import EmbeddedCluster
    from tests.e2e.support import free_port, wait_healthy

    # Under the checkout: the cluster runs as the postgres user, who must reach it.
    var_dir = ROOT / "var" / f"test-quickstart-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERN_")}
    env.update(ERN_VAR_DIR=str(var_dir), ERN_GRAPH_DIR=str(graph_dir))
    port = free_port()
    var_dir.parent.mkdir(exist_ok=True)
    log = var_dir.parent / f"{var_dir.name}.log"
    try:
        with log.open("wb") as out:
            # Its own session, so that the SIGINT goes to its process group as Ctrl-C does.
            proc = subprocess.Popen(
                ["./scripts/quickstart", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_healthy(f"http://127.0.0.1:{port}", proc, log, timeout_s=180)
        assert EmbeddedCluster(var_dir).running()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "embedded cluster stopped" in log.read_text()
        assert not EmbeddedCluster(var_dir).running()
    finally:
        EmbeddedCluster(var_dir).stop()
        shutil.rmtree(var_dir, ignore_errors=True)
        log.unlink(missing_ok=True)
