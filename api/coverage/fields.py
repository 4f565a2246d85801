"""Responders present at a moment and their coverage field, p_covered and cells: one helper.

- Responders: available members holding ``responder`` or ``defense`` (those a personal
  alert asks), not in quiet hours, placed at their usual anchors at the time (route >
  zone > home; live locations excluded: a map is about the usual week).
- Each mode's field is :func:`geo.route.k_nearest_field` on its own graph with the
  mobilisation delay per anchor, at the graph's nominal speed (per-member speed factors
  are left out: the k-distinct label pruning is only exact for one speed per search).
  Mode ``all`` evaluates on the walk graph's nodes (else the first loaded), the other
  modes' fields transferred by snapping (see :mod:`geo.coverage`).
- ``p_covered`` uses ``ERN_ACCEPTANCE_RATE`` for everyone.
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from api.coverage.errors import ModeWithoutGraph
from api.errors import Unprocessable
from api.graphs import GraphStore, ModeGraph
from api.presence.index import PresenceIndex
from api.presence.modes import MODES, mask_of_roles
from api.settings import Settings
from geo import coverage as gc
from geo import presence as gp

RESPONDER_ROLES = frozenset({"responder", "defense"})
DEFAULT_MINUTES = {"walk": 5.0, "bike": 6.0, "drive": 8.0, "all": 5.0}
# Search horizon for t1_s/tk_s beyond the threshold: times farther than this are null.
HORIZON_FACTOR = 3.0


def default_minutes(mode: str) -> float:
    """Minutes when the request gives none: 5 walk, 8 drive, as the issue says."""
    return DEFAULT_MINUTES[mode]


@dataclass(frozen=True)
class Params:
    """Validated parameters of a coverage request."""

    mode: str
    minutes: float
    k: int
    res: int


def used_modes(graphs: GraphStore, mode: str) -> list[str]:
    """The modes a request covers (every loaded one for 'all'), or ModeWithoutGraph."""
    if mode == "all":
        used = [m for m in MODES if m in graphs.by_mode]
        if not used:
            msg = "mode 'all': no street graph is loaded"
            raise ModeWithoutGraph(msg)
        return used
    if mode not in graphs.by_mode:
        reason = graphs.status().get(mode, "not configured")
        msg = f"mode {mode!r} has no loaded street graph: {reason}"
        raise ModeWithoutGraph(msg)
    return [mode]


@dataclass(frozen=True)
class Evaluation:
    """The evaluation nodes (one graph) and, per mode used, how to move its field there."""

    graph: ModeGraph
    modes: list[str]
    transfers: dict[str, tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]]]


_EVAL_LOCK = threading.Lock()


def evaluation(graphs: GraphStore, settings: Settings, mode: str) -> Evaluation:
    """Evaluation graph of a mode (walk for 'all'), snap transfers cached on that graph."""
    used = used_modes(graphs, mode)
    base_mode = "walk" if "walk" in used else used[0]
    base = graphs.by_mode[base_mode]
    with _EVAL_LOCK:
        cache: dict[Any, Any] = base.graph._cache.setdefault("coverage_transfers", {})
        transfers = {}
        for m in used:
            if m == base_mode:
                continue
            key = (m, id(graphs.by_mode[m].graph), settings.max_snap_m, settings.walk_speed_mps)
            if key not in cache:
                other = graphs.by_mode[m]
                node, dist = other.snapper.snap(base.graph.lon, base.graph.lat)
                cache[key] = (
                    np.asarray(node, dtype=np.int64),
                    np.asarray(dist, dtype=np.float64) / settings.walk_speed_mps,
                    np.asarray(dist) <= settings.max_snap_m,
                )
            transfers[m] = cache[key]
    return Evaluation(graph=base, modes=used, transfers=transfers)


def local_time(index: PresenceIndex, at: datetime) -> tuple[int, float]:
    """(weekday, seconds after midnight) of ``at`` in the network's time zone, or 422."""
    try:
        local = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(index.timezone)
    except (OverflowError, ValueError):
        msg = f"at: {at.isoformat()} has no local time in {index.timezone.key}"
        raise Unprocessable(msg) from None
    return local.weekday(), float(local.hour * 3600 + local.minute * 60 + local.second)


def hour_time(hour: int) -> tuple[int, float]:
    """(weekday, second) of half past an hour of the week (Monday 00:00 = 0)."""
    return hour // 24, float((hour % 24) * 3600 + 1800)


@dataclass(frozen=True)
class Responders:
    """The active anchors of the responders present at one moment, per mode used."""

    nodes: dict[str, NDArray[np.int64]]  # graph node per anchor
    members: dict[str, NDArray[np.int64]]  # dense member number per anchor
    mobilization_s: float  # added to every anchor's travel time


def _member_ok(
    index: PresenceIndex, weekday: int, second: float, absent: NDArray[np.bool_] | None
) -> NDArray[np.bool_]:
    ok = index.member_filter(mask_of_roles(RESPONDER_ROLES), weekday, second)
    return ok if absent is None else ok & ~absent


def responders_at(
    index: PresenceIndex,
    modes: list[str],
    *,
    weekday: int,
    second: float,
    absent: NDArray[np.bool_] | None = None,
) -> Responders:
    """Who responds at a local time and from where (``absent``: e.g. those snoozed then)."""
    ok = _member_ok(index, weekday, second, absent)
    nodes, members = {}, {}
    for m in modes:
        mp = index.modes[m]
        idx = mp.active(weekday=weekday, second=second, member_ok=ok)
        node = mp.table.node[idx].astype(np.int64)
        keep = node >= 0
        nodes[m] = node[keep]
        members[m] = mp.table.member[idx][keep].astype(np.int64)
    return Responders(nodes=nodes, members=members, mobilization_s=index.mobilization_s)


# Per anchor table: the first anchor of each run of anchors sharing one weekly window
# (a route's nodes, a zone's node), whose activity stands for the run's.
_RUNS: weakref.WeakKeyDictionary[gp.AnchorTable, NDArray[np.int64]] = weakref.WeakKeyDictionary()
_RUNS_LOCK = threading.Lock()


def _window_runs(table: gp.AnchorTable) -> NDArray[np.int64]:
    with _RUNS_LOCK:
        found = _RUNS.get(table)
        if found is None:
            m, s, e = table.days_mask, table.start_s, table.end_s
            change = np.ones(m.size, dtype=bool)
            change[1:] = (m[1:] != m[:-1]) | (s[1:] != s[:-1]) | (e[1:] != e[:-1])
            found = np.flatnonzero(change).astype(np.int64)
            _RUNS[table] = found
        return found


def responders_key(
    index: PresenceIndex,
    modes: list[str],
    *,
    weekday: int,
    second: float,
    absent: NDArray[np.bool_] | None = None,
) -> bytes:
    """A digest equal for two moments with the same :func:`responders_at` (cheap to compute).

    The active anchors are a function of which anchor windows contain the time and which
    members pass the filter (``AnchorTable.select``); anchors sharing a window are tested
    once, so this costs a small part of a selection. Hours of different presence segments
    often have the same responders (a route window ends as another one's starts).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.packbits(_member_ok(index, weekday, second, absent)).tobytes())
    for m in modes:
        table = index.modes[m].table
        runs = _window_runs(table)
        active = gp.window_active(
            table.days_mask[runs],
            table.start_s[runs],
            table.end_s[runs],
            weekday=weekday,
            second=second,
        )
        digest.update(m.encode())
        digest.update(np.packbits(active).tobytes())
    return digest.digest()


def compute_field(
    graphs: GraphStore,
    ev: Evaluation,
    responders: Responders,
    *,
    labels: int,
    max_time_s: float,
    far_labels: int | None = None,
    near_time_s: float = math.inf,
) -> gc.Field:
    """The merged field of the responders of every mode used, on the evaluation nodes.

    ``far_labels``/``near_time_s``: one search keeps ``labels`` responders up to
    ``near_time_s`` and ``far_labels`` beyond (see :func:`geo.coverage.mode_field`).
    """
    parts: list[gc.Field] = []
    for m in ev.modes:
        nodes = responders.nodes[m]
        f = gc.mode_field(
            graphs.by_mode[m].graph,
            nodes,
            responders.members[m],
            labels=labels,
            max_time_s=max_time_s,
            offset_s=np.full(nodes.size, responders.mobilization_s),
            far_labels=far_labels,
            near_time_s=near_time_s,
        )
        if m in ev.transfers:
            node, approach, reachable = ev.transfers[m]
            f = gc.transfer(f, node, approach, reachable=reachable)
        parts.append(f)
    return gc.merge_fields(parts, labels=labels)


@dataclass(frozen=True)
class Figures:
    """One moment's coverage: the field on the evaluation nodes, p_covered, the cells."""

    field: gc.Field
    p: NDArray[np.float64]
    cells: gc.CellIndex
    stats: gc.CellStats


def figures(
    graphs: GraphStore,
    settings: Settings,
    ev: Evaluation,
    responders: Responders,
    params: Params,
    *,
    times: bool,
) -> Figures:
    """compute_field -> p_covered -> cell_stats, in one search.

    The search keeps enough labels within the limit to decide p_covered against the target
    (:func:`geo.coverage.labels_for_target`) and, with ``times``, the k nearest out to
    HORIZON_FACTOR x the limit for the cells' median t1_s/tk_s; without, no medians (the
    weekly profile counts gaps only).
    """
    threshold = params.minutes * 60.0
    labels = gc.labels_for_target(params.k, settings.acceptance_rate, settings.coverage_target)
    field = compute_field(
        graphs,
        ev,
        responders,
        labels=labels,
        max_time_s=threshold * HORIZON_FACTOR if times else threshold,
        far_labels=params.k if times else None,
        near_time_s=threshold,
    )
    cells = gc.cell_index(ev.graph.graph, params.res)
    p = gc.p_covered(field, settings.acceptance_rate, threshold_s=threshold)
    stats = gc.cell_stats(
        cells,
        field,
        p,
        gc.node_street_m(ev.graph.graph),
        k=params.k,
        threshold_s=threshold,
        target=settings.coverage_target,
        medians=times,
    )
    return Figures(field=field, p=p, cells=cells, stats=stats)
