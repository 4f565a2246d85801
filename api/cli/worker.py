"""`ern worker`: drain the notification outbox and escalate alert waves (api.background.worker)."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, max=1000, help="deliveries leased and recorded per round [256]"),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="deliveries in flight at once, on one event loop [128]"),
    ] = None,
    parent_pid: Annotated[
        int | None,
        typer.Option(hidden=True, help="stop when this process is no longer the parent"),
    ] = None,
) -> None:
    """Deliver queued notifications and escalate waves (embedded PostGIS unless a URL is set)."""
    from api.background.worker import run_worker

    run_worker(
        batch_size=batch_size, concurrency=concurrency, parent_pid=parent_pid, echo=typer.echo
    )
