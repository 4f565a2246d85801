"""One mode's anchors and their AnchorIndex per week segment and roles (cached, prefetched)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from api.graphs import ModeGraph
from geo import presence as gp
from geo.route import AnchorIndex

log = logging.getLogger("ern.presence")

# (weekday, seconds after midnight) -> members passing roles and quiet hours then.
MemberFilter = Callable[[int, float], NDArray[np.bool_]]
# Cached anchor indexes per mode: (segment, roles) pairs kept, least recently used dropped.
# An index holds every active anchor (~25 MB for Porto's drive commuters at 08:30), so a
# few: the current and recent segments for the three role sets alerts use.
SEGMENTS_KEPT = 12


@dataclass(eq=False)
class ModePresence:
    """Anchors of one mode's members, the mode's graph (None: straight line), cached indexes."""

    mode: str
    table: gp.AnchorTable
    boundaries: NDArray[np.int64]
    graph: ModeGraph | None
    n_members: int
    _indexes: OrderedDict[tuple[int, int], AnchorIndex] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: set[tuple[int, int]] = field(default_factory=set)

    def active(
        self, *, weekday: int, second: float, member_ok: NDArray[np.bool_]
    ) -> NDArray[np.int64]:
        """Indices of the table's active anchors at a local time for eligible members."""
        return self.table.select(weekday=weekday, second=second, member_ok=member_ok)

    def anchor_index(
        self,
        *,
        weekday: int,
        second: float,
        roles_mask: int,
        member_ok: MemberFilter,
        factor: NDArray[np.float64],
        prefetch: bool = True,
    ) -> AnchorIndex:
        """The AnchorIndex of the active anchors, cached per week segment and roles.

        With ``prefetch``, the next segment's index is built in a background thread, so
        that the alert arriving after the next window boundary finds it ready.
        """
        segment = gp.week_segment(self.boundaries, weekday, second)
        key = (segment, roles_mask)
        with self._lock:
            found = self._indexes.get(key)
            if found is not None:
                self._indexes.move_to_end(key)
        if found is None:
            found = self._build(key, weekday, second, member_ok, factor)
        if prefetch and self.boundaries.size:
            self._prefetch_next(segment, roles_mask, member_ok, factor)
        return found

    def _build(
        self,
        key: tuple[int, int],
        weekday: int,
        second: float,
        member_ok: MemberFilter,
        factor: NDArray[np.float64],
    ) -> AnchorIndex:
        assert self.graph is not None
        idx = self.active(weekday=weekday, second=second, member_ok=member_ok(weekday, second))
        members = self.table.member[idx]
        built = AnchorIndex.build(
            self.graph.graph.n_nodes, members, self.table.node[idx], None, factor[members]
        )
        with self._lock:
            self._indexes[key] = built
            self._indexes.move_to_end(key)
            while len(self._indexes) > SEGMENTS_KEPT:
                self._indexes.popitem(last=False)
        return built

    def _prefetch_next(
        self, segment: int, roles_mask: int, member_ok: MemberFilter, factor: NDArray[np.float64]
    ) -> None:
        bounds = self.boundaries
        start = int(bounds[segment] if segment < bounds.size else bounds[0])
        weekday, second = start // gp.DAY_S, float(start % gp.DAY_S)
        key = (gp.week_segment(bounds, weekday, second), roles_mask)
        with self._lock:
            if key in self._indexes or key in self._pending:
                return
            self._pending.add(key)

        def run() -> None:
            try:
                self._build(key, weekday, second, member_ok, factor)
            except Exception:  # a failed prefetch only means the next alert builds it
                log.exception("prefetching the presence of segment %s failed", key)
            finally:
                with self._lock:
                    self._pending.discard(key)

        threading.Thread(target=run, name=f"presence-prefetch-{self.mode}", daemon=True).start()
