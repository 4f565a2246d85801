"""README "First steps", run as written: every command of its fenced blocks, end to end.

The blocks are read from the README, so the section cannot drift from what works. The two
long-running commands (the quick start, the inbox) each get a process; the ports and the
database are the test's: the quick start's line becomes `ern serve` on a free port with the
test database (the quick start itself is `scripts/setup` and then `ern serve`).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import Server, ern, free_port, server_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def first_steps_blocks() -> list[str]:
    """The ```sh blocks of the README's First steps section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## First steps\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def test_the_section_has_the_terminals_and_the_session() -> None:
    terminals, session = first_steps_blocks()
    lines = [line.split("#")[0].strip() for line in terminals.splitlines()]
    assert lines == [
        "ERN_WEBHOOK_ALLOW_PRIVATE=true ./scripts/quickstart --port 8000",
        ".venv/bin/ern inbox --port 8025",
    ]
    for step in ("ern admin create-coordinator", "ern synth", "--load", "Idempotency-Key"):
        assert step in session
    assert "/responses" in session


def _documents(text: str) -> list[Any]:
    """The JSON documents curl printed one after another (without newlines between)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def _wait_for(path: Path, text: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = path.read_text() if path.exists() else ""
        if text in out:
            return out
        time.sleep(0.3)
    pytest.fail(f"{text!r} not printed:\n{path.read_text() if path.exists() else ''}")


def test_first_steps_reach_a_delivered_notification(
    fresh_database: str, graphs: Any, graph_dir: Path, tmp_path: Path
) -> None:
    terminals, session = first_steps_blocks()
    # The working directory a user has: ./.venv, ./var with the compiled graphs.
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "graphs").symlink_to(graph_dir)
    env = server_env(fresh_database, graph_dir, tmp_path / "var")
    ern(env, "db", "upgrade")
    server = Server(env, tmp_path / "serve.log")
    inbox_port = free_port()

    def ours(text: str) -> str:
        return text.replace("8000", str(server.port)).replace("8025", str(inbox_port))

    inbox_line = ours(terminals.splitlines()[1].split("#")[0])
    inbox_log = tmp_path / "inbox.log"
    with inbox_log.open("wb") as out:
        inbox = subprocess.Popen(
            ["bash", "-c", f"exec {inbox_line}"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started = _wait_for(inbox_log, "listening on")
        assert "ERN_WEBHOOK_ALLOW_PRIVATE=true" in started
        server.wait_healthy()
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", ours(session)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.output()[-3000:]}"
        printed = _wait_for(inbox_log, "signature ok")
        assert "alert for alert" in printed and "BAD SIGNATURE" not in printed
        # The session's last three answers: rosa's accept, alice's view, the health.
        answers = _documents(done.stdout)
        accepted, view, health = answers[-3:]
        assert accepted["state"] == "accepted"
        assert view["id"] in printed and "rosa" in json.dumps(view)
        assert set(health["deliveries"]) == {"webhook", "email", "sms"}
        assert "loaded 100 members" in done.stderr
        token = json.loads((tmp_path / "var" / "synth.tokens.json").read_text())
        assert len(token) == 100
    finally:
        inbox.terminate()
        inbox.wait(timeout=10)
        code = server.stop()
    assert code == 0, server.output()[-4000:]
    assert "Traceback" not in server.output()
    # The synthetic members' webhooks fail: a line per cause, not one per attempt.
    warnings = [line for line in server.output().splitlines() if "WARNING ern.notify" in line]
    assert 1 <= len(warnings) <= 6, "\n".join(warnings)
