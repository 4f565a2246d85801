"""Start-up freezes the long-lived heap, so full collections do not walk the graphs and index."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from api.main import _warm_presence


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs with the collector as usual


def test_warm_up_freezes_what_is_alive_then(app: FastAPI, client, unfrozen) -> None:  # type: ignore[no-untyped-def]
    assert gc.get_freeze_count() == 0
    graphs = app.state.graphs
    _warm_presence(app)
    frozen = gc.get_freeze_count()
    # The graphs' objects and the presence index built by the warm-up are among them.
    assert frozen > 10_000
    assert not gc.is_tracked(graphs) or all(graphs is not o for o in gc.get_objects(2))
    # What is allocated afterwards is collected as usual.
    cycle: list[object] = []
    cycle.append(cycle)
    assert any(o is cycle for o in gc.get_objects(0))
    scraped = client.get("/metrics").text
    values = {s.name: s.value for f in text_string_to_metric_families(scraped) for s in f.samples}
    # The gauge is the count at the freeze; frozen objects that died since (temporaries alive
    # at that moment) have left the count, never joined it.
    gauge = values.get("ern_python_gc_frozen_objects")
    assert gauge is not None and frozen <= gauge <= frozen * 1.001
