"""Helpers for alert tests: the site around a target node, posting alerts, reading the outbox."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.notify.models import Delivery
from tests.api.factories import auth

HOOK = "http://127.0.0.1:9/hook"


@dataclass(frozen=True)
class Site:
    """The walk graph around an alert target node, with NetworkX travel times to it."""

    graph: Any
    target: int
    lon: float
    lat: float
    # node -> shortest travel time node -> target (s), from NetworkX
    time_to_target_s: dict[int, float]

    def point(self) -> dict[str, Any]:
        return {"type": "Point", "coordinates": [self.lon, self.lat]}

    def nodes_by_time(self) -> list[int]:
        """Nodes that reach the target, nearest first, one per distinct travel time and position."""
        seen_t: set[float] = set()
        seen_xy: set[tuple[float, float]] = set()
        out = []
        for node, t in sorted(self.time_to_target_s.items(), key=lambda kv: kv[1]):
            xy = (float(self.graph.lon[node]), float(self.graph.lat[node]))
            key_t = round(t, 3)
            if node == self.target or key_t in seen_t or xy in seen_xy:
                continue
            seen_t.add(key_t)
            seen_xy.add(xy)
            out.append(node)
        return out


def make_site(graphs: Any, walk_nx: nx.DiGraph, target: int) -> Site:
    graph = graphs.get("walk").graph
    times = nx.single_source_dijkstra_path_length(
        walk_nx.reverse(copy=False), target, weight="travel_time_s"
    )
    return Site(
        graph=graph,
        target=target,
        lon=float(graph.lon[target]),
        lat=float(graph.lat[target]),
        time_to_target_s=dict(times),
    )


def post_alert(
    client: TestClient, token: str, body: dict[str, Any], *, key: str | None = "k1"
) -> Any:
    headers = auth(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/alerts", json=body, headers=headers)


def deliveries(db: Session, alert_id: Any, *, message_kind: str | None = None) -> list[Delivery]:
    stmt = select(Delivery).where(Delivery.alert_id == alert_id).order_by(Delivery.id)
    if message_kind is not None:
        stmt = stmt.where(Delivery.message_kind == message_kind)
    return list(db.scalars(stmt.execution_options(populate_existing=True)))


def count_rows(db: Session, model: Any) -> int:
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


def race(*calls: Callable[[], Any], stagger_s: float = 0.0) -> list[Any]:
    """Run the calls in threads released together; their results in order (errors re-raised).

    ``stagger_s``: each call starts after a random delay up to this, so that racers of unequal
    speed (a worker pass, an HTTP request) also meet in the other order.
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []
    delays = [random.uniform(0.0, stagger_s) for _ in calls]

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            time.sleep(delays[i])
            results[i] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a racer did not finish"
    if errors:
        raise errors[0]
    return results
