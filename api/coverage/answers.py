"""Coverage answers: GeoJSON cells, public gap cells, the profile as JSON or CSV, recruitment.

Counts below ``ERN_K_ANON`` are never shown, times are rounded to the minute, and no
member's zone, route, position or id appears in any answer.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.coverage.cache import cache_get, cache_put
from api.coverage.fields import Params
from api.coverage.recruitment import recruit
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
from api.coverage.service import CoverageResult, coverage_map, public_cells, weekly_profile
from api.graphs import GraphStore
from api.settings import Settings
from geo import coverage as gc
from geo import presence as gp


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
    found = cache_get(key) if cached else None
    # the entry holds the result itself: an id reused after eviction never matches
    if found is not None and found[0] is result:
        return found[1]  # type: ignore[no-any-return]
    answer = coverage_answer(result, settings, params, at=at, cached=cached)
    text = answer.model_dump_json().encode()
    # the text a later request gets says cached: true (the features are built once)
    again = answer.model_copy(update={"ern": answer.ern.model_copy(update={"cached": True})})
    cache_put(key, (result, text if cached else again.model_dump_json().encode()))
    return text


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
    weight: str = "street",
) -> RecruitCollection:
    """GET /v1/coverage/recruit: the n best sites as GeoJSON points."""
    result, cached = recruit(
        session, graphs, settings, params, n=n, hours=hours, now=now, weight=weight
    )
    features = [
        RecruitFeature(
            geometry=PointGeometry(coordinates=[round(s.lon, 6), round(s.lat, 6)]),
            properties=RecruitProperties(
                rank=s.rank, gain_m=s.gain_m, gain_share=round(s.gain_share, 5), h3=s.h3
            ),
        )
        for s in result.suggestions
    ]
    meta = _meta(
        params, settings, result.computed_at, cached, res=params.res, n=n, hours=hours,
        weight=weight,
    )  # fmt: skip
    return RecruitCollection(features=features, ern=meta)
