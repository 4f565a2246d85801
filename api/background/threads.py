"""Outbox delivery and wave escalation as threads of the app (ERN_WORKER_PROCESS=false, tests)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from api.alerts.escalation import EscalationWorker
from api.notify.worker import OutboxWorker


def start_workers(app: FastAPI) -> Callable[[], None]:
    """Start the outbox and escalation workers on the app's database, graphs and clock."""
    state = app.state
    outbox = OutboxWorker(state.session_factory, state.settings, clock=state.clock)
    escalation = EscalationWorker(
        state.session_factory, state.settings, state.graphs, clock=state.clock
    )
    outbox.start()
    escalation.start()

    def stop() -> None:
        escalation.stop(timeout_s=5.0)
        outbox.stop(timeout_s=10.0)

    return stop
