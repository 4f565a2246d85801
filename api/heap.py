"""The long-lived heap kept out of the garbage collector's full scans.

After start-up a server holds millions of long-lived objects (graphs, snappers, the presence
index, SQLAlchemy's mappers) that never become garbage. A full (generation 2) collection
walks all of them: measured at 100-200 ms in `ern serve` and `ern worker` under load, a stall
of every request in flight at that moment (docs/benchmarks.md, "Garbage-collector stalls").
``gc.freeze()`` moves what exists now into a permanent generation that collections skip; what
is allocated later is collected as before.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("ern.heap")


def freeze_long_lived() -> int:
    """Collect once, then freeze every object alive now; how many are frozen in all."""
    from api import metrics

    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    metrics.GC_FROZEN.set(frozen)
    log.info("start-up heap frozen: %d objects out of the collector's scans", frozen)
    return frozen
