"""Background workers run inside the service (outbox delivery, wave escalation)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI


def start_workers(app: FastAPI) -> Callable[[], None]:
    """Start the in-process workers; returns a function that stops them."""

    def stop() -> None:
        return None

    return stop
