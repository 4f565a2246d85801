"""Coverage maps and the weekly profile from the presence index, cached per parameters.

The figures of one moment come from :func:`api.coverage.fields.figures`; recruitment is
in :mod:`api.coverage.recruitment`, the GeoJSON/JSON/CSV answers in
:mod:`api.coverage.answers`.

- Answers are cached per parameters and the presence token, which a trigger replaces on
  every write to members, zones and routes: any change of presence data invalidates them.
- The weekly profile computes one field per distinct set of responders present (hours of
  different presence segments often place the same responders the same way), and only
  what it reports: no medians, no GeoJSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from api.coverage import repository as repo
from api.coverage.cache import cached, settings_key
from api.coverage.fields import (
    Params,
    evaluation,
    figures,
    hour_time,
    local_time,
    responders_at,
    responders_key,
    used_modes,
)
from api.graphs import GraphStore
from api.presence.cache import presence_index
from api.presence.index import PresenceIndex
from api.settings import Settings
from geo import coverage as gc
from geo import presence as gp

ALERT_DAYS = 90
PUBLIC_RES = 8


@dataclass(frozen=True)
class CoverageResult:
    """One map: cells and their figures, with what it was computed from."""

    cells: gc.CellIndex
    stats: gc.CellStats
    computed_at: datetime


def coverage_map(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    at: datetime,
    now: datetime,
) -> tuple[CoverageResult, bool]:
    """Cells of the coverage field at ``at``; True when the answer came from the cache."""
    used_modes(graphs, params.mode)  # 409 before any work
    token = repo.presence_token(session)
    index = presence_index(session, graphs, settings, token=token)
    weekday, second = local_time(index, at)
    minute = gp.week_second(weekday, second) // 60
    # Members snoozed at that moment are absent (issue 14); a snooze ends by itself, so the
    # cache key names who is snoozed, not only the presence token.
    absent = index.snoozed(at)
    snoozed = tuple(np.flatnonzero(absent).tolist())
    key = ("map", token, id(graphs), params, minute, snoozed, settings_key(settings))
    return cached(
        key,
        token,
        lambda: map_at(index, graphs, settings, params, weekday, second, now, absent=absent),
    )


def map_at(
    index: PresenceIndex,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    weekday: int,
    second: float,
    now: datetime,
    *,
    absent: NDArray[np.bool_] | None = None,
) -> CoverageResult:
    """The map at a local time from a presence index (no database)."""
    ev = evaluation(graphs, settings, params.mode)
    responders = responders_at(index, ev.modes, weekday=weekday, second=second, absent=absent)
    fig = figures(graphs, settings, ev, responders, params, times=True)
    return CoverageResult(cells=fig.cells, stats=fig.stats, computed_at=now)


def public_cells(result: CoverageResult) -> list[str]:
    """Ids of the gap cells (the caller computed the map at resolution <= 8)."""
    if result.cells.res > PUBLIC_RES:
        msg = f"the public view is at resolution {PUBLIC_RES} or coarser"
        raise ValueError(msg)
    gaps = result.stats.gap.tolist()
    return [c for c, gap in zip(result.cells.ids, gaps, strict=True) if gap]


@dataclass(frozen=True)
class ProfileHour:
    """One hour of the week (Monday 00:00 = 0) in the network's time zone."""

    hour: int
    covered_share: float
    mean_p_covered: float
    gap_cells: int
    alerts: int
    alerts_covered_share: float | None


@dataclass(frozen=True)
class Profile:
    """The 168 hours."""

    hours: list[ProfileHour]
    computed_at: datetime
    fields: int  # distinct responder sets searched


def weekly_profile(
    session: Session, graphs: GraphStore, settings: Settings, params: Params, *, now: datetime
) -> tuple[Profile, bool]:
    """The 168 hours sampled at half past; True when the answer came from the cache."""
    used_modes(graphs, params.mode)  # 409 before any work
    token = repo.presence_token(session)
    index = presence_index(session, graphs, settings, token=token)
    since = now - timedelta(days=ALERT_DAYS)
    alerts = repo.alert_points(session, since=since)
    alert_key = (len(alerts), max((a[2] for a in alerts), default=None))
    key = ("profile", token, id(graphs), params, alert_key, settings_key(settings))
    return cached(
        key, token, lambda: profile_of(index, graphs, settings, params, alerts=alerts, now=now)
    )


def alert_nodes(
    index: PresenceIndex,
    graphs: GraphStore,
    settings: Settings,
    mode: str,
    alerts: list[tuple[float, float, datetime]],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Evaluation node and local hour of the week of each past alert in the service area."""
    if not alerts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    ev = evaluation(graphs, settings, mode)
    node, dist = ev.graph.snapper.snap(
        np.array([a[0] for a in alerts]), np.array([a[1] for a in alerts])
    )
    near = np.asarray(dist) <= settings.max_snap_m
    hours = []
    for a in alerts:
        wd, sec = local_time(index, a[2])
        hours.append(wd * 24 + int(sec // 3600))
    return np.asarray(node, dtype=np.int64)[near], np.array(hours, dtype=np.int64)[near]


def profile_of(
    index: PresenceIndex,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    alerts: list[tuple[float, float, datetime]],
    now: datetime,
) -> Profile:
    """The 168 hours from a presence index and past alert points (no database)."""
    ev = evaluation(graphs, settings, params.mode)
    threshold = params.minutes * 60.0
    street = gc.node_street_m(ev.graph.graph)
    alert_node, alert_hour = alert_nodes(index, graphs, settings, params.mode, alerts)
    memo: dict[bytes, tuple[gc.HourSummary, NDArray[np.bool_]]] = {}
    out: list[ProfileHour] = []
    for hour in range(168):
        weekday, second = hour_time(hour)
        key = responders_key(index, ev.modes, weekday=weekday, second=second)
        if key not in memo:
            responders = responders_at(index, ev.modes, weekday=weekday, second=second)
            fig = figures(graphs, settings, ev, responders, params, times=False)
            summary = gc.summarise_hour(
                fig.stats, fig.field, fig.p, street, k=params.k, threshold_s=threshold
            )
            memo[key] = (summary, gc.node_covered(fig.field, k=params.k, threshold_s=threshold))
        summary, covered = memo[key]
        mine = alert_node[alert_hour == hour]
        out.append(
            ProfileHour(
                hour=hour,
                covered_share=summary.covered_share,
                mean_p_covered=summary.mean_p_covered,
                gap_cells=summary.gap_cells,
                alerts=int(mine.size),
                alerts_covered_share=float(covered[mine].mean()) if mine.size else None,
            )
        )
    return Profile(hours=out, computed_at=now, fields=len(memo))
