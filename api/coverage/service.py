"""Coverage maps, weekly profile and recruitment from the presence index, cached per parameters.

- Responders: available members holding ``responder`` or ``defense`` (those a personal
  alert asks), not in quiet hours, placed at their usual anchors at the time (route >
  zone > home; live locations excluded: a map is about the usual week).
- Each mode's field is :func:`geo.route.k_nearest_field` on its own graph with the
  mobilisation delay per anchor, at the graph's nominal speed (per-member speed factors
  are left out: the k-distinct label pruning is only exact for one speed per search).
  Mode ``all`` evaluates on the walk graph's nodes (else the first loaded), the other
  modes' fields transferred by snapping (see :mod:`geo.coverage`).
- Answers are cached per parameters and the presence token, which a trigger replaces on
  every write to members, zones and routes: any change of presence data invalidates them.
- ``p_covered`` uses ``ERN_ACCEPTANCE_RATE`` for everyone; ``acceptance`` can be an array
  per member number once history exists.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from api.coverage import repository as repo
from api.coverage.schemas import (
    CellFeature,
    CellProperties,
    CoverageCollection,
    CoverageMeta,
    PointGeometry,
    Polygon,
    ProfileHourRead,
    ProfileRead,
    PublicCollection,
    PublicFeature,
    PublicMeta,
    PublicProperties,
    RecruitCollection,
    RecruitFeature,
    RecruitProperties,
)
from api.errors import Conflict, Unprocessable
from api.graphs import GraphStore, ModeGraph
from api.presence.service import MODES, PresenceIndex, _roles_mask, presence_index
from api.settings import Settings
from geo import coverage as gc
from geo import presence as gp

RESPONDER_ROLES = frozenset({"responder", "defense"})
DEFAULT_MINUTES = {"walk": 5.0, "bike": 6.0, "drive": 8.0, "all": 5.0}
# Search horizon for t1_s/tk_s beyond the threshold: times farther than this are null.
HORIZON_FACTOR = 3.0
CACHE_SIZE = 64
ALERT_DAYS = 90
PUBLIC_RES = 8


class ModeWithoutGraph(Conflict):
    """The requested mode has no loaded street graph."""


def default_minutes(mode: str) -> float:
    """Minutes when the request gives none: 5 walk, 8 drive, as the issue says."""
    return DEFAULT_MINUTES[mode]


@dataclass(frozen=True)
class Evaluation:
    """The evaluation nodes (one graph) and, per mode used, how to move its field there."""

    graph: ModeGraph
    transfers: dict[str, tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]]]


def _modes(graphs: GraphStore, mode: str) -> list[str]:
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


_EVAL_LOCK = threading.Lock()


def evaluation(graphs: GraphStore, settings: Settings, mode: str) -> Evaluation:
    """Evaluation graph of a mode (walk for 'all'), snap transfers cached on that graph."""
    used = _modes(graphs, mode)
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
    return Evaluation(graph=base, transfers=transfers)


def _local(index: PresenceIndex, at: datetime) -> tuple[int, float]:
    try:
        local = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(index.timezone)
    except (OverflowError, ValueError):
        msg = f"at: {at.isoformat()} has no local time in {index.timezone.key}"
        raise Unprocessable(msg) from None
    return local.weekday(), float(local.hour * 3600 + local.minute * 60 + local.second)


def compute_field(
    index: PresenceIndex,
    graphs: GraphStore,
    ev: Evaluation,
    modes: list[str],
    *,
    weekday: int,
    second: float,
    labels: int,
    max_time_s: float,
    absent: NDArray[np.bool_] | None = None,
) -> gc.Field:
    """The merged field of the responders of ``modes`` at a local time, on the evaluation nodes.

    ``absent`` (per member number) leaves members out, e.g. those snoozed at that moment.
    """
    ok = index.member_filter(_roles_mask(RESPONDER_ROLES), weekday, second)
    if absent is not None:
        ok = ok & ~absent
    parts: list[gc.Field] = []
    for m in modes:
        mp = index.modes[m]
        graph = graphs.by_mode[m].graph
        idx = mp.active(weekday=weekday, second=second, member_ok=ok)
        nodes = mp.table.node[idx]
        keep = nodes >= 0
        f = gc.mode_field(
            graph,
            nodes[keep],
            mp.table.member[idx][keep],
            labels=labels,
            max_time_s=max_time_s,
            offset_s=np.full(int(keep.sum()), index.mobilization_s),
        )
        if m in ev.transfers:
            node, approach, reachable = ev.transfers[m]
            f = gc.transfer(f, node, approach, reachable=reachable)
        parts.append(f)
    return gc.merge_fields(parts, labels=labels)


@dataclass(frozen=True)
class CoverageResult:
    """One map: cells and their figures, with what it was computed from."""

    cells: gc.CellIndex
    stats: gc.CellStats
    computed_at: datetime


@dataclass(frozen=True)
class Params:
    """Validated parameters of a coverage request."""

    mode: str
    minutes: float
    k: int
    res: int


_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _cache_get(key: tuple[Any, ...]) -> Any:
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
        return found


def _cache_put(key: tuple[Any, ...], value: Any) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = value
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)


def clear_cache() -> None:
    """Forget every cached coverage answer of this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _settings_key(settings: Settings) -> tuple[Any, ...]:
    return (
        settings.acceptance_rate,
        settings.coverage_target,
        settings.mobilization_s,
        settings.timezone,
        settings.max_snap_m,
    )


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
    modes = _modes(graphs, params.mode)
    token = repo.presence_token(session)
    index = presence_index(session, graphs, settings, token=token)
    weekday, second = _local(index, at)
    minute = gp.week_second(weekday, second) // 60
    # Members snoozed at that moment are absent (issue 14); a snooze ends by itself, so the
    # cache key names who is snoozed, not only the presence token.
    absent = index.snoozed(at)
    snoozed = tuple(np.flatnonzero(absent).tolist())
    key = ("map", token, id(graphs), params, minute, snoozed, _settings_key(settings))
    found = _cache_get(key) if token is not None else None
    if found is not None:
        return found, True
    result = map_at(index, graphs, settings, params, modes, weekday, second, now, absent=absent)
    if token is not None:
        _cache_put(key, result)
    return result, False


def map_at(
    index: PresenceIndex,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    modes: list[str],
    weekday: int,
    second: float,
    now: datetime,
    *,
    absent: NDArray[np.bool_] | None = None,
) -> CoverageResult:
    ev = evaluation(graphs, settings, params.mode)
    threshold = params.minutes * 60.0
    labels = gc.labels_for_target(params.k, settings.acceptance_rate, settings.coverage_target)
    # Two searches: k labels out to the horizon for the times, enough labels within the
    # limit for p_covered and counts (a few labels far cost much less than many far).
    times = compute_field(
        index,
        graphs,
        ev,
        modes,
        weekday=weekday,
        second=second,
        labels=params.k,
        max_time_s=threshold * HORIZON_FACTOR,
        absent=absent,
    )
    field = compute_field(
        index,
        graphs,
        ev,
        modes,
        weekday=weekday,
        second=second,
        labels=labels,
        max_time_s=threshold,
        absent=absent,
    )
    cells = gc.cell_index(ev.graph.graph, params.res)
    street = gc.node_street_m(ev.graph.graph)
    p = gc.p_covered(field, settings.acceptance_rate, threshold_s=threshold)
    stats = gc.cell_stats(
        cells,
        field,
        p,
        street,
        k=params.k,
        threshold_s=threshold,
        target=settings.coverage_target,
        times=times,
    )
    return CoverageResult(cells=cells, stats=stats, computed_at=now)


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


def _segment_key(
    index: PresenceIndex, modes: list[str], weekday: int, second: float
) -> tuple[Any, ...]:
    # Same segment of every mode (window and quiet-hour boundaries): same anchors, same field.
    return tuple(gp.week_segment(index.modes[m].boundaries, weekday, second) for m in modes)


def weekly_profile(
    session: Session, graphs: GraphStore, settings: Settings, params: Params, *, now: datetime
) -> tuple[Profile, bool]:
    """The 168 hours sampled at half past; hours in one presence segment share one field."""
    _modes(graphs, params.mode)  # 409 before any work
    token = repo.presence_token(session)
    index = presence_index(session, graphs, settings, token=token)
    since = now - timedelta(days=ALERT_DAYS)
    alerts = repo.alert_points(session, since=since)
    alert_key = (len(alerts), max((a[2] for a in alerts), default=None))
    key = ("profile", token, id(graphs), params, alert_key, _settings_key(settings))
    found = _cache_get(key) if token is not None else None
    if found is not None:
        return found, True
    result = profile_of(index, graphs, settings, params, alerts=alerts, now=now)
    if token is not None:
        _cache_put(key, result)
    return result, False


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
    modes = _modes(graphs, params.mode)
    ev = evaluation(graphs, settings, params.mode)
    g = ev.graph.graph
    threshold = params.minutes * 60.0
    cells = gc.cell_index(g, params.res)
    street = gc.node_street_m(g)
    alert_node = np.empty(0, dtype=np.int64)
    alert_hour = np.empty(0, dtype=np.int64)
    if alerts:
        lon = np.array([a[0] for a in alerts])
        lat = np.array([a[1] for a in alerts])
        node, dist = ev.graph.snapper.snap(lon, lat)
        near = np.asarray(dist) <= settings.max_snap_m
        hours = []
        for a in alerts:
            wd, sec = _local(index, a[2])
            hours.append(wd * 24 + int(sec // 3600))
        alert_node = np.asarray(node, dtype=np.int64)[near]
        alert_hour = np.array(hours, dtype=np.int64)[near]
    memo: dict[tuple[Any, ...], tuple[gc.HourSummary, NDArray[np.bool_]]] = {}
    out: list[ProfileHour] = []
    for hour in range(168):
        weekday, second = hour // 24, float((hour % 24) * 3600 + 1800)
        seg = _segment_key(index, modes, weekday, second)
        if seg not in memo:
            field = compute_field(
                index,
                graphs,
                ev,
                modes,
                weekday=weekday,
                second=second,
                labels=gc.labels_for_target(
                    params.k, settings.acceptance_rate, settings.coverage_target
                ),
                max_time_s=threshold,
            )
            p = gc.p_covered(field, settings.acceptance_rate, threshold_s=threshold)
            stats = gc.cell_stats(
                cells,
                field,
                p,
                street,
                k=params.k,
                threshold_s=threshold,
                target=settings.coverage_target,
                medians=False,
            )
            summary = gc.summarise_hour(stats, field, p, street, k=params.k, threshold_s=threshold)
            memo[seg] = (summary, gc.node_covered(field, k=params.k, threshold_s=threshold))
        summary, covered = memo[seg]
        mine = alert_node[alert_hour == hour]
        share = float(covered[mine].mean()) if mine.size else None
        out.append(
            ProfileHour(
                hour=hour,
                covered_share=summary.covered_share,
                mean_p_covered=summary.mean_p_covered,
                gap_cells=summary.gap_cells,
                alerts=int(mine.size),
                alerts_covered_share=share,
            )
        )
    return Profile(hours=out, computed_at=now)


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
) -> tuple[RecruitResult, bool]:
    """Greedy maximal covering: n walking volunteers at cell centres, gains over ``hours``.

    Gain of a site = street metres newly covered (k within N minutes), summed over the
    hours and divided by their number: the mean street length gained in one of those hours.
    """
    _modes(graphs, params.mode)  # 409 before any work
    if "walk" not in graphs.by_mode:
        msg = "recruitment places walking volunteers: the walk graph is not loaded"
        raise ModeWithoutGraph(msg)
    token = repo.presence_token(session)
    index = presence_index(session, graphs, settings, token=token)
    key = ("recruit", token, id(graphs), params, n, tuple(hours), _settings_key(settings))
    found = _cache_get(key) if token is not None else None
    if found is not None:
        return found, True
    result = recruit_of(index, graphs, settings, params, n=n, hours=hours, now=now)
    if token is not None:
        _cache_put(key, result)
    return result, False


def recruit_of(
    index: PresenceIndex,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    n: int,
    hours: list[int],
    now: datetime,
) -> RecruitResult:
    """Greedy recruitment from a presence index (no database)."""
    modes = _modes(graphs, params.mode)
    ev = evaluation(graphs, settings, params.mode)
    g = ev.graph.graph
    threshold = params.minutes * 60.0
    street = gc.node_street_m(g)
    memo: dict[tuple[Any, ...], int] = {}
    deficits: list[NDArray[np.int64]] = []
    weights: list[float] = []
    for hour in hours:
        weekday, second = hour // 24, float((hour % 24) * 3600 + 1800)
        seg = _segment_key(index, modes, weekday, second)
        if seg in memo:
            weights[memo[seg]] += 1.0
            continue
        field = compute_field(
            index,
            graphs,
            ev,
            modes,
            weekday=weekday,
            second=second,
            labels=params.k,
            max_time_s=threshold,
        )
        within = (field.times_s <= threshold).sum(axis=1)
        memo[seg] = len(deficits)
        deficits.append(np.maximum(params.k - within, 0).astype(np.int64))
        weights.append(1.0)
    deficit = np.stack(deficits)
    weight = np.asarray(weights)[:, None] * street[None, :] / len(hours)
    cells = gc.cell_index(g, params.res)
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
    total = float(street.sum()) or 1.0
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


def public_cells(result: CoverageResult) -> list[str]:
    """Ids of the gap cells (the caller computed the map at resolution <= 8)."""
    if result.cells.res > PUBLIC_RES:
        msg = f"the public view is at resolution {PUBLIC_RES} or coarser"
        raise ValueError(msg)
    gaps = result.stats.gap.tolist()
    return [c for c, gap in zip(result.cells.ids, gaps, strict=True) if gap]


# --- answers (schemas) ---------------------------------------------------------------------


def _count(value: int, k_anon: int) -> int | str:
    # k-anonymity: a count below k_anon is never shown, whatever it is (0 included).
    return int(value) if value >= k_anon else f"<{k_anon}"


def _meta(
    params: Params, settings: Settings, computed_at: datetime, cached: bool, **extra: Any
) -> CoverageMeta:
    return CoverageMeta(
        mode=params.mode,  # type: ignore[arg-type]
        minutes=params.minutes,
        k=params.k,
        k_anon=settings.k_anon,
        target=settings.coverage_target,
        computed_at=computed_at,
        cached=cached,
        **extra,
    )


def read_coverage(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    at: datetime,
    now: datetime,
) -> CoverageCollection:
    """GET /v1/coverage: the cells as GeoJSON polygons."""
    result, cached = coverage_map(session, graphs, settings, params, at=at, now=now)
    return coverage_answer(result, settings, params, at=at, cached=cached)


def read_coverage_json(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    at: datetime,
    now: datetime,
) -> bytes:
    """GET /v1/coverage as JSON text; a cached map's text is kept too (building it is costly)."""
    result, cached = coverage_map(session, graphs, settings, params, at=at, now=now)
    key = ("json", id(result), at.isoformat(), params)
    found = _cache_get(key) if cached else None
    # the entry holds the result itself: an id reused after eviction never matches
    if found is not None and found[0] is result:
        return found[1]  # type: ignore[no-any-return]
    text = coverage_answer(result, settings, params, at=at, cached=cached).model_dump_json()
    # the text a later request gets says cached: true
    again = coverage_answer(result, settings, params, at=at, cached=True)
    _cache_put(key, (result, again.model_dump_json().encode()))
    return text.encode()


def coverage_answer(
    result: CoverageResult, settings: Settings, params: Params, *, at: datetime, cached: bool
) -> CoverageCollection:
    """The map as GeoJSON: counts k-anonymous, times rounded to the minute."""
    s = result.stats
    features = [
        CellFeature(
            geometry=Polygon(coordinates=[gc.cell_polygon(cell)]),
            properties=CellProperties(
                h3=cell,
                t1_s=gc.round_minute_s(float(s.t1_s[i])),
                tk_s=gc.round_minute_s(float(s.tk_s[i])),
                responders_within=_count(int(s.responders_within[i]), settings.k_anon),
                p_covered=round(float(s.p_covered[i]), 3),
                street_m=round(float(s.street_m[i]), 1),
                gap=bool(s.gap[i]),
            ),
        )
        for i, cell in enumerate(result.cells.ids)
    ]
    meta = _meta(params, settings, result.computed_at, cached, at=at, res=params.res)
    return CoverageCollection(features=features, ern=meta)


def read_public(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    at: datetime,
    now: datetime,
) -> PublicCollection:
    """GET /v1/coverage/public: gap cells at resolution <= 8, nothing else."""
    result, _ = coverage_map(session, graphs, settings, params, at=at, now=now)
    features = [
        PublicFeature(
            geometry=Polygon(coordinates=[gc.cell_polygon(c)]),
            properties=PublicProperties(h3=c, gap=True),
        )
        for c in public_cells(result)
    ]
    return PublicCollection(
        features=features, ern=PublicMeta(res=params.res, computed_at=result.computed_at)
    )


def read_profile(
    session: Session, graphs: GraphStore, settings: Settings, params: Params, *, now: datetime
) -> ProfileRead:
    """GET /v1/coverage/profile: the 168 hours."""
    profile, cached = weekly_profile(session, graphs, settings, params, now=now)
    hours = [
        ProfileHourRead(
            hour=h.hour,
            day=gp.DAYS[h.hour // 24],
            hour_of_day=h.hour % 24,
            covered_share=round(h.covered_share, 4),
            mean_p_covered=round(h.mean_p_covered, 4),
            gap_cells=h.gap_cells,
            alerts=h.alerts,
            alerts_covered_share=None
            if h.alerts_covered_share is None
            else round(h.alerts_covered_share, 4),
        )
        for h in profile.hours
    ]
    return ProfileRead(
        hours=hours, ern=_meta(params, settings, profile.computed_at, cached, res=params.res)
    )


PROFILE_COLUMNS = (
    "hour",
    "day",
    "hour_of_day",
    "covered_share",
    "mean_p_covered",
    "gap_cells",
    "alerts",
    "alerts_covered_share",
)


def profile_csv(profile: ProfileRead) -> str:
    """The profile as CSV, one row per hour, header first."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PROFILE_COLUMNS)
    for h in profile.hours:
        row = h.model_dump()
        writer.writerow(["" if row[c] is None else row[c] for c in PROFILE_COLUMNS])
    return buf.getvalue()


def read_recruit(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    params: Params,
    *,
    n: int,
    hours: list[int],
    now: datetime,
) -> RecruitCollection:
    """GET /v1/coverage/recruit: the n best sites as GeoJSON points."""
    result, cached = recruit(session, graphs, settings, params, n=n, hours=hours, now=now)
    features = [
        RecruitFeature(
            geometry=PointGeometry(coordinates=[round(s.lon, 6), round(s.lat, 6)]),
            properties=RecruitProperties(
                rank=s.rank, gain_m=s.gain_m, gain_share=round(s.gain_share, 5), h3=s.h3
            ),
        )
        for s in result.suggestions
    ]
    meta = _meta(params, settings, result.computed_at, cached, res=params.res, n=n, hours=hours)
    return RecruitCollection(features=features, ern=meta)
