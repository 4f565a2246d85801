"""/v1/alerts: raise, read (per party), answer and close alerts; coordinators list them."""

from __future__ import annotations

import asyncio
import functools
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from api.alerts import answers, raising, views
from api.alerts import repository as repo
from api.alerts.facts import lonlat
from api.alerts.schemas import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    AlertCoordinatorView,
    AlertCreate,
    AlertPage,
    AlertRequesterView,
    AlertResponderView,
    AlertSummary,
    Kind,
    ResponseCreate,
    Status,
)
from api.deps import (
    BearerToken,
    ClockDep,
    CurrentMember,
    SessionDep,
    SettingsDep,
    require_role,
)
from api.errors import COMMON_RESPONSES, ErrorBody
from api.metrics import count_alert
from api.types import Point

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

AnyView = AlertCoordinatorView | AlertRequesterView | AlertResponderView
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such alert, or not yours to see"}
}


def visible_alert(
    alert_id: uuid.UUID, session: SessionDep, caller: CurrentMember
) -> views.AlertAccess:
    """The alert if the caller is a coordinator, its requester or a notified member; else 404."""
    return views.visible_alert(session, alert_id, caller)


AlertDep = Annotated[views.AlertAccess, Depends(visible_alert)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_CHARS,
        description="required; a retry with the same key and body within 24 h returns the "
        "same alert (200, header Idempotent-Replayed) and notifies no one again",
    ),
]


CREATE_DESCRIPTION = """
Ranks the members who can be there soonest (presence at `at`, default now) and queues the
first wave's notifications; the alert, its ranking and the outbox rows are committed before
the 201.

- `personal`: responders and defence volunteers; `defense`: defence volunteers only; both
  in waves of `ceil(missing / acceptance_rate)`, the next after `ERN_WAVE_TIMEOUT_S` without
  enough acceptances; once `needed` accepted, the others get a stand-down.
- `mass`: every available member within `ERN_MASS_MAX_ETA_S`, all at once, no stand-down.
- `at` and `exercise` are for coordinators (403 otherwise). An exercise is ranked and
  recorded (states `exercise`), delivers nothing, and is exempt from the rate limit.
- Rate limit: `ERN_ALERTS_PER_HOUR` live alerts per member and hour; 429 with `Retry-After`
  (seconds until the oldest alert in the hour leaves it).
- The answer is the requester's view; a coordinator gets the full view.
"""


@router.post(
    "",
    response_model=AnyView,
    status_code=201,
    summary="Raise an alert",
    description=CREATE_DESCRIPTION,
    responses={
        **COMMON_RESPONSES,
        200: {"model": AnyView, "description": "an idempotent retry: the alert this key made"},
        403: {"model": ErrorBody, "description": "`at`/`exercise` sent by a non-coordinator"},
        422: {
            "model": ErrorBody,
            "description": "invalid body, missing Idempotency-Key, key reused with another "
            "body, or location outside the service area (nothing stored)",
        },
        429: {"model": ErrorBody, "description": "rate limit; see Retry-After"},
    },
)
async def create_alert(
    request: Request,
    body: AlertCreate,
    idempotency_key: IdempotencyKey,
    token: BearerToken,
) -> Response:
    """Rank who can be there soonest and notify the first wave; committed before the answer."""
    # The hot path owns its transaction: authentication, ranking, the raise call and the
    # commit in one thread hop. SessionDep + CurrentCaller + a sync handler took three hops
    # (about a fifth of the request's CPU under load). The app's state is read directly.
    state = request.app.state
    view, created = await asyncio.get_running_loop().run_in_executor(
        state.alert_executor,
        functools.partial(
            raising.create_alert_as,
            state.session_factory,
            state.graphs,
            state.settings,
            token=token,
            body=body,
            idempotency_key=idempotency_key,
            clock=state.clock,
        ),
    )
    if created:
        count_alert(view.kind, getattr(view, "ranking", "unknown"))
    # The view is already one of response_model's types: answered as is, not validated again.
    return Response(
        view.model_dump_json(),
        status_code=201 if created else 200,
        media_type="application/json",
        headers=None if created else {"Idempotent-Replayed": "true"},
    )


@router.get(
    "",
    response_model=AlertPage,
    summary="List alerts (coordinators)",
    dependencies=[Depends(require_role("coordinator"))],
    responses={**COMMON_RESPONSES, 403: {"model": ErrorBody, "description": "not a coordinator"}},
)
def list_alerts(
    session: SessionDep,
    status: Status | None = None,
    kind: Kind | None = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AlertPage:
    """Alerts newest first, filtered by status, kind and creation time."""
    filters = repo.AlertFilter(
        status=status, kind=kind, since=since, until=until, limit=limit, offset=offset
    )
    items = [
        AlertSummary(
            id=alert.id,
            status=alert.status,  # type: ignore[arg-type]
            kind=alert.kind,  # type: ignore[arg-type]
            ranking=alert.ranking,  # type: ignore[arg-type]
            needed=alert.needed,
            exercise=alert.exercise,
            location=Point(type="Point", coordinates=lonlat(alert)),
            requester_handle=handle,
            notified_count=notified,
            accepted_count=accepted,
            created_at=alert.created_at,
            closed_at=alert.closed_at,
        )
        for alert, handle, notified, accepted in repo.list_alerts(session, filters)
    ]
    return AlertPage(items=items, limit=limit, offset=offset)


@router.get(
    "/{alert_id}",
    response_model=AnyView,
    summary="One alert, as the caller's party sees it",
    responses={**COMMON_RESPONSES, **NOT_FOUND},
)
def read_alert(access: AlertDep, session: SessionDep) -> Any:
    """Requester: status, who accepted; notified member: where and what; coordinator: all."""
    return views.read_alert(session, access)


@router.post(
    "/{alert_id}/responses",
    response_model=AlertResponderView,
    summary="Accept or decline an alert",
    description="Notified members only (others: 404). Repeating an answer changes nothing. "
    "An answer may change while the alert is not closed, except that once enough have "
    "accepted (a fulfilled personal or defence alert) nobody else may accept (409), stood "
    "down or not; declining is always possible. A withdrawal that leaves a fulfilled alert "
    "short reopens it and the next wave goes out at once.",
    responses={
        **COMMON_RESPONSES,
        404: {"model": ErrorBody, "description": "no such alert, or the caller was not notified"},
        409: {
            "model": ErrorBody,
            "description": "alert closed, or enough accepted (the member was stood down)",
        },
    },
)
def respond(
    alert_id: uuid.UUID,
    body: ResponseCreate,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    member: CurrentMember,
) -> AlertResponderView:
    """A notified member's answer; repeating it changes nothing."""
    return answers.respond(
        session, settings, alert_id=alert_id, member=member, answer=body.answer, now=clock.now()
    )


@router.post(
    "/{alert_id}/close",
    response_model=AnyView,
    summary="Close an alert",
    responses={
        **COMMON_RESPONSES,
        **NOT_FOUND,
        403: {"model": ErrorBody, "description": "a notified member who is not the requester"},
    },
)
def close_alert(
    access: AlertDep, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> Any:
    """Requester or coordinator: no more waves; everyone notified gets a close message."""
    return answers.close(session, settings, access=access, now=clock.now())
