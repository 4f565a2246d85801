"""`ern worker`: drain the notification outbox and escalate alert waves until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from api.settings import Settings


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
    from api import database
    from api.alerts.escalation import EscalationWorker
    from api.graphs import load_store
    from api.logs import configure
    from api.notify.worker import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, OutboxWorker

    settings = Settings()
    configure(settings.log_format)  # ERN_LOG_FORMAT; redacted either way
    log = logging.getLogger("ern.notify")
    settings.secret_bytes()  # refuse placeholder secrets before sending anything
    url = database.resolve_database_url(settings)
    if settings.embedded:
        database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    status = database.schema_status(engine)
    if not status["up_to_date"]:
        log.warning(
            "schema is at %s, head is %s: run `ern db upgrade`", status["current"], status["head"]
        )
    factory = database.make_session_factory(engine)
    outbox = OutboxWorker(
        factory,
        settings,
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        concurrency=concurrency or DEFAULT_CONCURRENCY,
    )
    # Graphs let escalation rank again when an alert's stored reserve runs short.
    escalation = EscalationWorker(factory, settings, load_store(settings, build_missing=False))

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        outbox.request_stop()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    if parent_pid is not None:
        # Started by `ern serve` (api.worker_process): a server killed outright leaves no
        # worker behind.
        from api.worker_process import watch_parent

        def _orphaned() -> None:
            log.info("parent process %d is gone: stopping after the current batch", parent_pid)
            outbox.request_stop()

        watch_parent(parent_pid, _orphaned)
    typer.echo("ern worker: delivering notifications and escalating waves (Ctrl-C to stop)")
    escalation.start()
    try:
        outbox.run_forever()
    finally:
        escalation.stop()
        outbox.close()
        engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("ern worker stopped")
