"""The `ern worker` process: the outbox and escalation workers on one database, until a signal."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

from api.settings import Settings


def run_worker(
    *,
    batch_size: int | None,
    concurrency: int | None,
    parent_pid: int | None,
    echo: Callable[[str], None],
) -> None:
    """Deliver queued notifications and escalate waves until SIGINT, SIGTERM or an orphaning."""
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
        # Started by `ern serve` (api.background.supervisor): a server killed outright leaves
        # no worker behind.
        from api.background.supervisor import watch_parent

        def _orphaned() -> None:
            log.info("parent process %d is gone: stopping after the current batch", parent_pid)
            outbox.request_stop()

        watch_parent(parent_pid, _orphaned)
    from api.heap import freeze_long_lived

    freeze_long_lived()  # graphs and mappers: out of full GC scans (api/heap.py)
    echo("ern worker: delivering notifications and escalating waves (Ctrl-C to stop)")
    escalation.start()
    try:
        outbox.run_forever()
    finally:
        escalation.stop()
        outbox.close()
        engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    echo("ern worker stopped")
