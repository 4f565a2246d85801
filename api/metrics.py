"""GET /metrics (Prometheus text format): requests by route template, alerts, deliveries, pools.

Label values are route templates, kinds, channels and states, never ids or raw paths. With
PROMETHEUS_MULTIPROC_DIR set (``ern serve`` sets it for its uvicorn processes and the worker
child), every process writes its samples there and any process answers for all of them.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.notify.repository import oldest_due

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"

REQUESTS = Counter("ern_http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "ern_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ALERTS = Counter("ern_alerts_raised", "Alerts raised (not replays)", ["kind", "ranking"])
DELIVERIES = Counter(
    "ern_deliveries", "Notification delivery attempts by outcome", ["channel", "result"]
)
OUTBOX_LAG = Gauge(
    "ern_outbox_lag_seconds",
    "How long the longest-waiting due notification has waited (at the last scrape)",
    multiprocess_mode="livemostrecent",
)
GRAPH_NODES = Gauge(
    "ern_graph_nodes", "Nodes of the loaded street graph", ["mode"], multiprocess_mode="livemax"
)
GRAPH_EDGES = Gauge(
    "ern_graph_edges", "Edges of the loaded street graph", ["mode"], multiprocess_mode="livemax"
)
GRAPH_LOAD = Gauge(
    "ern_graph_load_seconds",
    "Time this process took to load (or build and load) its street graphs",
    multiprocess_mode="livemax",
)
GC_FROZEN = Gauge(
    "ern_python_gc_frozen_objects",
    "objects moved out of the garbage collector's scans after start-up (graphs, presence index)",
    multiprocess_mode="livemax",
)
POOL_SIZE = Gauge(
    "ern_db_pool_size", "Database connections kept per pool", multiprocess_mode="livesum"
)
POOL_CHECKED_OUT = Gauge(
    "ern_db_pool_checked_out", "Database connections in use", multiprocess_mode="livesum"
)
POOL_OVERFLOW = Gauge(
    "ern_db_pool_overflow", "Connections open beyond the pool size", multiprocess_mode="livesum"
)

# What a delivery attempt's stored state means as a result.
_RESULTS = {"sent": "sent", "failed": "failed", "pending": "retry"}


def count_deliveries(outcomes: Iterable[tuple[str, str]]) -> None:
    """Count (channel, stored state) of finished delivery attempts."""
    for channel, state in outcomes:
        DELIVERIES.labels(channel=channel, result=_RESULTS.get(state, state)).inc()


def count_alert(kind: str, ranking: str) -> None:
    """Count one alert raised."""
    ALERTS.labels(kind=kind, ranking=ranking).inc()


class RequestMetrics:
    """Counts and times every HTTP answer by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = scope.get("route")
            # The template ("/v1/members/{member_id}"), never the path: ids are not labels.
            template = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
            method = scope["method"] if template else "OTHER"
            labels = {"method": method, "route": template or UNMATCHED}
            REQUESTS.labels(**labels, status=str(status)).inc()
            LATENCY.labels(**labels).observe(time.perf_counter() - started)


router = APIRouter(include_in_schema=False)


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return DEFAULT_REGISTRY


def _sample_state(request: Request) -> None:
    state = request.app.state
    graphs = getattr(state, "graphs", None)
    for mode, graph in getattr(graphs, "by_mode", {}).items():
        GRAPH_NODES.labels(mode=mode).set(graph.graph.n_nodes)
        GRAPH_EDGES.labels(mode=mode).set(graph.graph.n_edges)
    engine = getattr(state, "engine", None)
    pool: Any = getattr(engine, "pool", None)
    if pool is not None and hasattr(pool, "checkedout"):
        POOL_SIZE.set(pool.size())
        POOL_CHECKED_OUT.set(pool.checkedout())
        POOL_OVERFLOW.set(max(0, pool.overflow()))
    if engine is None:
        return
    now = state.clock.now()
    try:
        with engine.connect() as conn:
            oldest = oldest_due(conn, now=now)
    except SQLAlchemyError:
        return  # the database is away: /healthz says so; the last value stays
    OUTBOX_LAG.set(0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()))


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text format; a bearer token is required when ERN_METRICS_TOKEN is set."""
    expected = request.app.state.settings.metrics_token
    if expected is not None:
        given = request.headers.get("authorization", "")
        want = f"Bearer {expected.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), want.encode()):
            return error_response(
                401,
                "Unauthorized",
                "ERN_METRICS_TOKEN is set: send it as a bearer token",
                {"WWW-Authenticate": "Bearer"},
            )
    _sample_state(request)
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)
