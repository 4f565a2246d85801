"""Helpers for tests that run ern in real processes: a webhook receiver, the CLI, a server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

SECRET = "e2e-secret-key-abcdefghijklmnopqrstuvwxyz0123456789"
ERN = [str(Path(sys.executable).parent / "ern")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A webhook receiver on 127.0.0.1 recording every request; the first ``fail_first`` get 500."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        received, statuses = self.requests, self.statuses

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if len(received) <= fail_first else 200
                statuses.append(status)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[bytes]:
        """Bodies answered 200."""
        return [
            body for (_, body), st in zip(self.requests, self.statuses, strict=True) if st == 200
        ]

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until ``count`` requests were answered 200, then a second more for duplicates."""
        deadline = time.monotonic() + timeout_s
        while len(self.accepted()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def server_env(
    database_url: str | None, graph_dir: Path, var_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of an ern process: ERN_DATABASE_URL unless None (the embedded default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERN_")}
    env.update(
        ERN_SECRET_KEY=SECRET,
        ERN_GRAPH_DIR=str(graph_dir),
        ERN_VAR_DIR=str(var_dir),
        ERN_TIMEZONE="Europe/Helsinki",
        ERN_WAVE_TIMEOUT_S="600",
        ERN_WEBHOOK_ALLOW_PRIVATE="true",  # the receivers listen on 127.0.0.1
        **extra,
    )
    if database_url is not None:
        env["ERN_DATABASE_URL"] = database_url
    return env


def ern(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*ERN, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ern {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_healthy(
    base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ern serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            answer = httpx.get(f"{base}/healthz", timeout=2.0)
            if answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail("ern serve did not become healthy")


class Server:
    """`ern serve` in a subprocess on a free port, its output in ``log``; stopped with SIGINT."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*ERN, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self) -> dict[str, Any]:
        return wait_healthy(self.base, self.proc, self.log)

    def stop(self) -> int:
        """Stop the server; returns its exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def output(self) -> str:
        return self.log.read_text()
