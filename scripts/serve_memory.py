#!/usr/bin/env python
"""Memory of a running `ern serve --workers N`: RSS and PSS per process and in total.

Usage::

    python scripts/serve_memory.py --graph-dir var/graphs --database-url URL [--workers 4]

Starts ``ern serve`` on a free 127.0.0.1 port against the given database and compiled
graphs, waits until ``/healthz`` reports every graph loaded and the worker child is up,
reads ``/proc/<pid>/smaps_rollup`` of every process of the tree, prints one JSON object and
stops the server. PSS (proportional set size) divides each shared page among the
processes that map it, so the PSS total is the honest memory of the whole tree; RSS counts
a shared page in every process that maps it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        with contextlib.suppress(OSError):
            todo.extend(_children(p))
    return seen


def _rollup(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[key.strip()] = int(parts[0]) / 1024.0
    return fields


def _cmdline(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return raw.strip()[:120]


def measure(graph_dir: Path, database_url: str, workers: int, settle_s: float) -> dict[str, Any]:
    """Start the server, wait for the graphs, measure the process tree, stop it."""
    port = _free_port()
    env = os.environ | {
        "ERN_DATABASE_URL": database_url,
        "ERN_GRAPH_DIR": str(graph_dir),
        "ERN_SECRET_KEY": secrets.token_urlsafe(32),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/ern"), "serve", "--workers", str(workers), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        ready_s = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                msg = f"ern serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}"
                raise SystemExit(msg)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
                graphs = body.get("graphs") or {}
                if graphs and all(str(v).startswith("loaded") for v in graphs.values()):
                    ready_s = time.perf_counter() - started
                    break
            except OSError:
                pass
            time.sleep(0.5)
        if ready_s is None:
            raise SystemExit("the server did not report its graphs loaded within 300 s")
        # every uvicorn worker answers /healthz only once its lifespan ran; give the others
        # (and the worker child) time to load as well
        time.sleep(settle_s)
        rows = []
        for pid in _tree(proc.pid):
            try:
                r = _rollup(pid)
            except OSError:
                continue
            rows.append(
                {
                    "pid": pid,
                    "cmd": _cmdline(pid),
                    "rss_mb": round(r.get("Rss", 0.0), 1),
                    "pss_mb": round(r.get("Pss", 0.0), 1),
                    "shared_mb": round(r.get("Shared_Clean", 0.0) + r.get("Shared_Dirty", 0.0), 1),
                    "private_mb": round(
                        r.get("Private_Clean", 0.0) + r.get("Private_Dirty", 0.0), 1
                    ),
                }
            )
        return {
            "workers": workers,
            "graph_dir": str(graph_dir),
            "first_ready_s": round(ready_s, 2),
            "processes": rows,
            "rss_total_mb": round(sum(r["rss_mb"] for r in rows), 1),
            "pss_total_mb": round(sum(r["pss_mb"] for r in rows), 1),
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Parse the options, measure once, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph-dir", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=15.0, help="wait after the first ready")
    args = parser.parse_args(argv)
    result = measure(args.graph_dir.resolve(), args.database_url, args.workers, args.settle_s)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
