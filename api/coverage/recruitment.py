"""Recruitment suggestions: greedy maximal covering over candidate cells for new volunteers.

A new volunteer walks, has its home zone at a cell's centre and is present at home over
the chosen hours (by default outside 08:00-18:00 on weekdays and all weekend); each pick
adds the street length that becomes covered (k responders within N minutes) over those
hours, with the previous picks in place (:func:`geo.coverage.greedy_recruit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from api.coverage import repository as repo
from api.coverage.cache import cached, settings_key
from api.coverage.errors import ModeWithoutGraph
from api.coverage.fields import (
    Params,
    compute_field,
    evaluation,
    hour_time,
    responders_at,
    responders_key,
    used_modes,
)
from api.coverage.service import ALERT_DAYS, alert_nodes
from api.graphs import GraphStore
from api.presence.cache import presence_index
from api.presence.index import PresenceIndex
from api.settings import Settings
from geo import coverage as gc


def default_recruit_hours() -> list[int]:
    """Hours a new volunteer is assumed at home: weekdays outside 08:00-18:00, all weekend."""
    return [h for h in range(168) if h >= 120 or not 8 <= h % 24 < 18]


def parse_hours(text: str | None) -> list[int]:
    """Hours of the week from 'default', 'evenings' (18-24 daily), 'night' (0-6) or '0-7,18,...'."""
    if text is None or text == "default":
        return default_recruit_hours()
    if text == "evenings":
        return [h for h in range(168) if h % 24 >= 18]
    if text == "night":
        return [h for h in range(168) if h % 24 < 6]
    hours: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo_s, hi_s = part.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
            else:
                lo = hi = int(part)
        except ValueError:
            msg = f"hours: {part!r} is not an hour of the week, a range a-b, or a named set"
            raise ValueError(msg) from None
        if not (0 <= lo <= hi <= 167):
            msg = f"hours: {part!r} must lie within 0-167 (Monday 00:00 = 0) with a <= b"
            raise ValueError(msg)
        hours.update(range(lo, hi + 1))
    if not hours:
        msg = "hours: no hour given"
        raise ValueError(msg)
    return sorted(hours)


@dataclass(frozen=True)
class Suggestion:
    """One recruitment site."""

    rank: int
    h3: str
    lon: float
    lat: float
    gain_m: float
    gain_share: float


@dataclass(frozen=True)
class RecruitResult:
    """Greedy picks in order."""

    suggestions: list[Suggestion]
    hours: list[int]
    computed_at: datetime


def recruit(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    n: int,
    hours: list[int],
    now: datetime,
    weight: str = "street",
) -> tuple[RecruitResult, bool]:
    """Greedy maximal covering: n walking volunteers at cell centres, gains over ``hours``.

    Gain of a site = street metres newly covered (k within N minutes), summed over the
    hours and divided by their number: the mean street length gained in one of those hours.
    ``weight="alerts"``: a metre counts once more for every past alert (last 90 days,
    exercises excluded) in its cell.
    """
    used_modes(graphs, params.mode)  # 409 before any work
    if "walk" not in graphs.by_mode:
        msg = "recruitment places walking volunteers: the walk graph is not loaded"
        raise ModeWithoutGraph(msg)
    token = repo.presence_token(session)
    index = presence_index(session, graphs, settings, token=token)
    alerts = []
    if weight == "alerts":
        alerts = repo.alert_points(session, since=now - timedelta(days=ALERT_DAYS))
    alert_key = (len(alerts), max((a[2] for a in alerts), default=None))
    extra = (weight, alert_key, settings_key(settings))
    key = ("recruit", token, id(graphs), params, n, tuple(hours), *extra)
    return cached(
        key,
        token,
        lambda: recruit_of(
            index, graphs, settings, params, n=n, hours=hours, now=now, alerts=alerts
        ),
    )


def recruit_of(
    index: PresenceIndex,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    n: int,
    hours: list[int],
    now: datetime,
    alerts: list[tuple[float, float, datetime]] | None = None,
) -> RecruitResult:
    """Greedy recruitment from a presence index (no database).

    ``alerts`` (lon, lat, when): weight each node's street length by 1 + the number of
    these alerts in its cell; None or empty: street length alone.
    """
    ev = evaluation(graphs, settings, params.mode)
    g = ev.graph.graph
    threshold = params.minutes * 60.0
    street = gc.node_street_m(g)
    # one field per distinct set of responders present over the hours, weighted by its hours
    memo: dict[bytes, int] = {}
    deficits: list[NDArray[np.int64]] = []
    weights: list[float] = []
    for hour in hours:
        weekday, second = hour_time(hour)
        key = responders_key(index, ev.modes, weekday=weekday, second=second)
        if key in memo:
            weights[memo[key]] += 1.0
            continue
        responders = responders_at(index, ev.modes, weekday=weekday, second=second)
        field = compute_field(graphs, ev, responders, labels=params.k, max_time_s=threshold)
        within = (field.times_s <= threshold).sum(axis=1)
        memo[key] = len(deficits)
        deficits.append(np.maximum(params.k - within, 0).astype(np.int64))
        weights.append(1.0)
    deficit = np.stack(deficits)
    cells = gc.cell_index(g, params.res)
    value = street
    if alerts:
        alert_node, _ = alert_nodes(index, graphs, settings, params.mode, alerts)
        per_cell = np.bincount(cells.cell[alert_node], minlength=len(cells.ids))
        value = street * (1.0 + per_cell[cells.cell])
    weight = np.asarray(weights)[:, None] * value[None, :] / len(hours)
    centres = [gc.cell_center(c) for c in cells.ids]
    walk = graphs.by_mode["walk"]
    site_node, site_dist = walk.snapper.snap(
        np.array([c[0] for c in centres]), np.array([c[1] for c in centres])
    )
    ok = np.asarray(site_dist) <= settings.max_snap_m
    sites = np.flatnonzero(ok)
    limit = threshold - settings.mobilization_s
    indptr, indices = gc.reach_sets(walk.graph, np.asarray(site_node)[sites], limit_s=limit)
    if ev.graph is not walk:
        # reach on the walk graph, evaluated on another graph's nodes: map through snapping
        back_node, back_dist = ev.graph.snapper.snap(
            walk.graph.lon[indices], walk.graph.lat[indices]
        )
        near = np.asarray(back_dist) <= settings.max_snap_m
        owner = np.repeat(np.arange(sites.size), np.diff(indptr))[near]
        nodes = np.asarray(back_node, dtype=np.int64)[near]
        pair = np.unique(owner * g.n_nodes + nodes)
        owner, indices = pair // g.n_nodes, pair % g.n_nodes
        indptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=sites.size))])
    picked = gc.greedy_recruit(indptr, indices, deficit, weight, n=n)
    total = float(value.sum()) or 1.0
    suggestions = []
    for rank, (site, gain) in enumerate(
        zip(picked.picks.tolist(), picked.gain.tolist(), strict=True), 1
    ):
        cell = cells.ids[int(sites[site])]
        lon, lat = centres[int(sites[site])]
        suggestions.append(
            Suggestion(
                rank=rank,
                h3=cell,
                lon=lon,
                lat=lat,
                gain_m=round(gain, 1),
                gain_share=gain / total,
            )
        )
    return RecruitResult(suggestions=suggestions, hours=hours, computed_at=now)
