"""Coverage routes: GET /v1/coverage, /profile, /recruit (coordinators) and /public (members)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from api.coverage import answers
from api.coverage.fields import Params, default_minutes
from api.coverage.recruitment import parse_hours
from api.coverage.schemas import (
    CoverageCollection,
    Mode,
    ProfileRead,
    PublicCollection,
    RecruitCollection,
)
from api.coverage.service import PUBLIC_RES
from api.deps import ClockDep, Coordinator, CurrentMember, SessionDep, SettingsDep
from api.errors import ErrorBody, Unprocessable
from geo.coverage import H3_RES_MAX, H3_RES_MIN, K_MAX

router = APIRouter(prefix="/v1/coverage", tags=["coverage"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, bad or revoked token"},
    403: {"model": ErrorBody, "description": "not a coordinator"},
    409: {"model": ErrorBody, "description": "the mode has no loaded street graph"},
    422: {"model": ErrorBody, "description": "bad parameters"},
}
ModeQ = Annotated[Mode, Query(description="travel mode, or all (each responder's own)")]
MinutesQ = Annotated[
    float | None, Query(gt=0, le=120, description="arrival limit; default 5 walk/all, 8 drive")
]
KQ = Annotated[int, Query(ge=1, le=K_MAX, description="responders wanted per place")]
ResQ = Annotated[int, Query(ge=H3_RES_MIN, le=H3_RES_MAX, description="H3 resolution")]
AtQ = Annotated[
    str | None,
    Query(
        description="ISO 8601 time (e.g. 2026-12-01T03:30:00+02:00); default now",
        min_length=10,
        max_length=40,
        pattern=r"^\d{4}-\d{2}-\d{2}[T ].*$",
    ),
]


def _at(value: str | None, now: datetime) -> datetime:
    # ISO 8601 only: pydantic's lax datetime would take ?at=0.5 as a Unix time.
    if value is None:
        return now
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        msg = f"at: {value!r} is not an ISO 8601 date and time"
        raise Unprocessable(msg) from None


def _params(mode: str, minutes: float | None, k: int, res: int) -> Params:
    return Params(
        mode=mode,
        minutes=minutes if minutes is not None else default_minutes(mode),
        k=k,
        res=res,
    )


@router.get(
    "", response_model=CoverageCollection, summary="Coverage cells at a time", responses=ERRORS
)
def read_coverage(
    _: Coordinator,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    at: AtQ = None,
    mode: ModeQ = "all",
    minutes: MinutesQ = None,
    k: KQ = 3,
    res: ResQ = 9,
) -> Response:
    """H3 cells with the nearest responders' times, p_covered and gaps (GeoJSON)."""
    now = clock.now()
    text = answers.read_coverage_json(
        session,
        request.app.state.graphs,
        settings,
        _params(mode, minutes, k, res),
        at=_at(at, now),
        now=now,
    )
    # Already validated text of a CoverageCollection: sent as is (8,000 cells take long to
    # validate again).
    return Response(text, media_type="application/json")


@router.get(
    "/profile",
    response_model=ProfileRead,
    summary="Coverage over the 168 hours of the week",
    responses={**ERRORS, 200: {"content": {"text/csv": {}}}},
)
def read_profile(
    _: Coordinator,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    mode: ModeQ = "all",
    minutes: MinutesQ = None,
    k: KQ = 3,
    res: ResQ = 9,
) -> Any:
    """Per hour: street share covered, mean p_covered, gap cells, past alerts covered."""
    profile = answers.read_profile(
        session, request.app.state.graphs, settings, _params(mode, minutes, k, res), now=clock.now()
    )
    if "text/csv" in request.headers.get("accept", ""):
        return Response(answers.profile_csv(profile), media_type="text/csv")
    return profile


@router.get(
    "/recruit",
    response_model=RecruitCollection,
    summary="Where one more volunteer would close the most gap",
    responses=ERRORS,
)
def read_recruit(
    _: Coordinator,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    n: Annotated[int, Query(ge=1, le=50, description="sites wanted")] = 10,
    hours: Annotated[
        str | None,
        Query(
            description="hours of the week the volunteer is at home (0 = Monday 00:00): "
            "'default' (weekdays outside 08-18, all weekend), 'evenings', 'night', or "
            "a list like '0-7,18-23'",
            pattern=r"^(default|evenings|night|\d{1,3}(-\d{1,3})?(,\d{1,3}(-\d{1,3})?)*)$",
        ),
    ] = None,
    mode: ModeQ = "all",
    minutes: MinutesQ = None,
    k: KQ = 3,
    res: ResQ = 9,
    weight: Annotated[
        Literal["street", "alerts"],
        Query(
            description="street length, or street length x (1 + past alerts in its cell, "
            "90 days, no exercises): gain_m is then in weighted metres"
        ),
    ] = "street",
) -> RecruitCollection:
    """Greedy maximal covering: numbered sites with the street length they would cover."""
    try:
        wanted = parse_hours(hours)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    return answers.read_recruit(
        session,
        request.app.state.graphs,
        settings,
        _params(mode, minutes, k, res),
        n=n,
        hours=wanted,
        now=clock.now(),
        weight=weight,
    )


@router.get(
    "/public",
    response_model=PublicCollection,
    summary="Gap cells for the whole network",
    responses={k: v for k, v in ERRORS.items() if k != 403},
)
def read_public(
    _: CurrentMember,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    at: AtQ = None,
    mode: ModeQ = "all",
    minutes: MinutesQ = None,
    k: KQ = 3,
    res: Annotated[int, Query(ge=H3_RES_MIN, le=PUBLIC_RES)] = PUBLIC_RES,
) -> PublicCollection:
    """Gap cells only, at resolution 8 or coarser, without times or counts."""
    now = clock.now()
    return answers.read_public(
        session,
        request.app.state.graphs,
        settings,
        _params(mode, minutes, k, res),
        at=_at(at, now),
        now=now,
    )
