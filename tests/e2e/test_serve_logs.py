"""What a running `ern serve` writes: its own and uvicorn's lines through ern's redacting
handler, in the text and the JSON format; one access line per request by route template."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.factories import HELSINKI_LAT, HELSINKI_LON, member_body
from tests.e2e.support import Server, ern, server_env

pytestmark = pytest.mark.slow

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
# Any decimal with 3 or more decimals (a coordinate to ~100 m or better) in a log line.
PRECISE = re.compile(r"(?<![\d.])-?\d{1,3}\.\d{3,}")
# Where the member lives, as a client might also put it in a query string.
LON, LAT = HELSINKI_LON + 0.00437, HELSINKI_LAT + 0.00291


def log_lines(output: str) -> list[str]:
    """The output's lines but the banners `ern serve` and its worker print (not log lines)."""
    return [line for line in output.splitlines() if line and not line.startswith("ern ")]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_servers_lines_are_redacted_and_name_routes_not_paths(
    log_format: str, fresh_database: str, graphs: Any, graph_dir: Path, tmp_path: Path
) -> None:
    env = server_env(fresh_database, graph_dir, tmp_path / "var", ERN_LOG_FORMAT=log_format)
    ern(env, "db", "upgrade")
    coordinator = ern(env, "admin", "create-coordinator", "--handle", "logs-coord")
    coord = {"Authorization": f"Bearer {coordinator.strip().splitlines()[-1]}"}
    server = Server(env, tmp_path / "serve.log")
    try:
        server.wait_healthy()
        body = member_body("logs-rosa", lon=LON, lat=LAT, contact={"email": "rosa@example.org"})
        made = httpx.post(f"{server.base}/v1/members", json=body, headers=coord)
        assert made.status_code == 201, made.text
        member_id, token = made.json()["member"]["id"], made.json()["token"]
        read = httpx.get(
            f"{server.base}/v1/members/{member_id}", headers={**coord, "X-Request-ID": "logs-1"}
        )
        assert read.status_code == 200 and read.headers["X-Request-ID"] == "logs-1"
        stray = httpx.get(f"{server.base}/v1/nowhere", params={"lat": LAT, "lon": LON})
        assert stray.status_code == 404
        me = httpx.get(f"{server.base}/v1/members/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
    finally:
        code = server.stop()
    output = server.output()
    assert code == 0, output[-4000:]
    assert "Traceback" not in output
    lines = log_lines(output)
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line is one JSON object
        loggers = {entry["logger"] for entry in entries}
        access = [entry for entry in entries if entry["logger"] == "ern.access"]
        read_line = next(e for e in access if e["request_id"] == "logs-1")
        assert read_line["route"] == "/v1/members/{member_id}" and read_line["status"] == 200
        assert any(e["route"] == "<unmatched>" and e["status"] == 404 for e in access)
    else:
        assert all(TEXT_LINE.match(line) for line in lines), lines
        loggers = {TEXT_LINE.match(line).group(0).split()[-1].rstrip(":") for line in lines}  # type: ignore[union-attr]
        assert any(
            "GET /v1/members/{member_id} 200" in line and line.endswith("[request_id=logs-1]")
            for line in lines
        ), lines
    # uvicorn's own lines (start-up, shut-down) went through ern's handler too; /healthz's
    # schema check does not log alembic's chatter on every probe.
    assert "uvicorn.error" in loggers and "ern.access" in loggers
    assert "alembic.runtime.migration" not in loggers
    # No raw path, token, contact detail or place; no uvicorn access line (raw path, query).
    for secret in (member_id, token, "rosa@example.org", "/v1/nowhere?"):
        assert secret not in output
    if log_format == "json":  # a time's fraction of a second is not a place
        lines = [json.dumps({k: v for k, v in e.items() if k != "time"}) for e in entries]
    assert PRECISE.search("\n".join(lines)) is None, PRECISE.findall("\n".join(lines))
