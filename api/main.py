"""create_app(settings): the FastAPI app, its lifespan (database, graphs, workers), errors."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import database, metrics
from api.clock import Clock, SystemClock
from api.errors import error_response, install_error_handlers
from api.graphs import GraphStore, load_store
from api.logs import RequestId
from api.settings import Settings

log = logging.getLogger("ern")


class _App(FastAPI):
    """FastAPI with RequestId outside everything, Starlette's ServerErrorMiddleware included.

    Middleware added with ``add_middleware`` runs inside ServerErrorMiddleware, so the 500 it
    sends for an unhandled error would go out without X-Request-ID; wrapped here, every
    answer carries it, and log lines made meanwhile (uvicorn's traceback aside) name it.
    """

    def build_middleware_stack(self) -> ASGIApp:
        settings: Settings = self.state.settings
        return RequestId(super().build_middleware_stack(), log_requests=settings.access_log)


class BodyLimit:
    """Answers 413 before reading more than ``max_bytes`` of a request body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0
        too_large = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            # FastAPI turns errors while reading a body into its own 400: drop that answer.
            if not too_large:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited, guarded)
        if too_large:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is larger than {self.max_bytes} bytes"
        await error_response(413, "PayloadTooLarge", detail)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _start_database(app: FastAPI, settings: Settings) -> None:
    url = database.resolve_database_url(settings)
    if settings.embedded:
        # The embedded default owns its schema: bring it up to date at start-up.
        database.upgrade(url)
    engine = database.make_engine(url, pool_size=settings.db_pool_size)
    status = database.schema_status(engine)
    if not status["up_to_date"]:
        log.warning(
            "schema is at %s, head is %s: run `ern db upgrade`", status["current"], status["head"]
        )
    app.state.engine = engine
    app.state.session_factory = database.make_session_factory(engine)


def _warm_presence(app: FastAPI) -> None:
    from api.heap import freeze_long_lived
    from api.presence.cache import warm_presence

    try:
        warm_presence(app.state.session_factory, app.state.graphs, app.state.settings)
    except Exception:
        log.exception("presence index warm-up failed; the first alert will build it")
    # Graphs and the warm index live as long as the process: keep them out of full GC scans.
    freeze_long_lived()


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    session_factory: Any = None,
    graphs: GraphStore | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The ern app; tests may inject engine, session factory, graphs, clock (else: lifespan)."""
    settings = settings or Settings()
    settings.secret_bytes()  # refuse placeholder secrets before serving anything

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_db = app.state.session_factory is None
        if owns_db:
            _start_database(app, settings)
        if app.state.graphs is None:
            build = settings.embedded or settings.graph_source is not None
            started = time.perf_counter()
            app.state.graphs = load_store(settings, build_missing=build)
            metrics.GRAPH_LOAD.set(time.perf_counter() - started)
        if owns_db:
            # The first alert after a start must not pay for building the presence index.
            threading.Thread(
                target=_warm_presence, args=(app,), name="ern-warm", daemon=True
            ).start()
        stop: Callable[[], None] | None = None
        if settings.run_workers:
            from api.background.threads import start_workers

            stop = start_workers(app)
        try:
            yield
        finally:
            if stop is not None:
                stop()
            app.state.alert_executor.shutdown(wait=True)
            if owns_db:
                app.state.engine.dispose()

    from fastapi import Depends

    from api.inputs import strict_query

    app = _App(
        # Strict query parameters on every route, including those of routers added later.
        dependencies=[Depends(strict_query)],
        title="ern",
        version="0.1.0",
        summary="Geospatial matching and routing for community emergency response networks",
        lifespan=lifespan,
        docs_url=None,  # served by api.docs from packaged files, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.engine = engine
    app.state.graphs = graphs
    app.state.clock = clock or SystemClock()
    # POST /v1/alerts' unit of work runs here: a plain executor is a cheaper hand-off than
    # anyio's thread pool. Few threads (ERN_ALERT_THREADS): the unit is mostly interpreter
    # work, so in the load test 20 threads took 25% more alerts per second than 4 but left the
    # in-process outbox 2.7 s behind instead of 25 ms (docs/benchmarks.md).
    app.state.alert_executor = ThreadPoolExecutor(
        max_workers=settings.alert_threads, thread_name_prefix="ern-alert"
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # Outermost: counts every answer, the 413s and the unmatched paths too.
    app.add_middleware(metrics.RequestMetrics)

    from api import health
    from api.alerts.router import router as alerts_router
    from api.coverage.router import router as coverage_router
    from api.docs import install_docs
    from api.members.router import router as members_router
    from api.notify.router import key_router as webhook_key_router
    from api.notify.router import router as deliveries_router
    from api.presence.router import router as location_router
    from api.web.router import router as map_router

    app.include_router(health.router)
    install_docs(app)
    # Routes are matched in order: the alerts first, as POST /v1/alerts is the hot path.
    app.include_router(alerts_router)
    app.include_router(location_router)
    app.include_router(members_router)
    app.include_router(deliveries_router)
    app.include_router(webhook_key_router)
    app.include_router(map_router)
    app.include_router(coverage_router)
    # Issue 14: snoozes (and, below, SMS replies and rallies).
    from api.presence.router import snooze_router
    from api.rallies.router import router as rallies_router
    from api.sms.router import router as sms_router

    app.include_router(snooze_router)
    app.include_router(sms_router)
    app.include_router(rallies_router)
    # Issue 13: buddy groups (build, publish, reads, rosters, moves) and group texts.
    from api.groups.router import router as groups_router
    from api.groups.texts_router import router as group_texts_router

    app.include_router(groups_router)
    app.include_router(group_texts_router)
    app.include_router(metrics.router)
    return app


def app_from_env() -> FastAPI:
    """The app from the environment's Settings: the factory each `ern serve --workers N` runs."""
    return create_app(Settings())
