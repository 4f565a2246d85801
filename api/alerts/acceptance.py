"""Who is likely to accept: acceptance probabilities, arrival order, the first wave's size."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from api.alerts import repository as repo
from api.presence.candidates import Candidate
from api.settings import Settings
from geo.acceptance import arrival_order, shrunk_rates, wave_size

# How far back a member's answers count for their acceptance probability.
HISTORY_WINDOW = timedelta(days=90)


class NetworkTotals:
    """The network's (accepted, notified) totals, reused by one process for a while.

    They are the prior every member's rate is shrunk to, over 90 days of answers: a minute
    more or less of history hardly moves them, but counting them reads every outcome of the
    window, a cost that grows with the history, on every alert. Entries are per database and
    per exercise flag, and age by the alerts' own clock (``now``), so a test's clock ages them
    too; an entry from the future (a clock set back) is not used.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, bool], tuple[datetime, tuple[int, int]]] = {}

    def get(self, key: tuple[str, bool], *, now: datetime, ttl_s: float) -> tuple[int, int] | None:
        """The totals counted under ``key`` less than ``ttl_s`` ago, if any."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        counted_at, totals = entry
        age_s = (now - counted_at).total_seconds()
        return totals if 0 <= age_s < ttl_s else None

    def put(self, key: tuple[str, bool], *, now: datetime, totals: tuple[int, int]) -> None:
        with self._lock:
            self._entries[key] = (now, totals)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


NETWORK_TOTALS = NetworkTotals()


def _network_key(session: Session, exercise: bool) -> tuple[str, bool]:
    return (session.get_bind().engine.url.render_as_string(hide_password=True), exercise)


def first_wave_size(needed: int, settings: Settings) -> int:
    """ceil(needed / acceptance_rate): how many to notify to expect ``needed`` acceptances."""
    return math.ceil(needed / settings.acceptance_rate - 1e-9)


def acceptance_probabilities(
    session: Session,
    settings: Settings,
    member_ids: Sequence[uuid.UUID],
    *,
    exercise: bool,
    now: datetime,
) -> NDArray[np.float64]:
    """Each member's chance to accept: own record of the last 90 days shrunk to the network's.

    Beta prior of weight ERN_ACCEPTANCE_PRIOR_N around the network's rate over the same
    alerts (ERN_ACCEPTANCE_RATE while the network has no history); exercises count only for
    exercises. The network's totals are counted at most every ERN_ACCEPTANCE_NETWORK_TTL_S
    per process (0: on every alert); a member's own record, on every alert.
    """
    ttl_s = settings.acceptance_network_ttl_s
    key = _network_key(session, exercise) if ttl_s > 0 else None
    known = NETWORK_TOTALS.get(key, now=now, ttl_s=ttl_s) if key is not None else None
    per, counted = repo.acceptance_history(
        session,
        member_ids,
        since=now - HISTORY_WINDOW,
        include_exercises=exercise,
        network=known is None,
    )
    if counted is not None and key is not None:
        NETWORK_TOTALS.put(key, now=now, totals=counted)
    net_accepted, net_notified = known or counted or (0, 0)
    network = net_accepted / net_notified if net_notified else settings.acceptance_rate
    accepted = [per.get(m, (0, 0))[0] for m in member_ids]
    notified = [per.get(m, (0, 0))[1] for m in member_ids]
    return shrunk_rates(accepted, notified, prior_rate=network, prior_n=settings.acceptance_prior_n)


def arrival_ranking(
    session: Session,
    settings: Settings,
    candidates: list[Candidate],
    *,
    needed: int,
    exercise: bool,
    now: datetime,
) -> tuple[list[Candidate], int]:
    """Candidates in arrival order (geo.acceptance.arrival_order) and the first wave's size.

    The first wave is the smallest prefix with P(at least ``needed`` accept) >=
    ERN_WAVE_CONFIDENCE (Poisson-binomial), capped as before at ceil(needed /
    ERN_ACCEPTANCE_RATE) (and at everyone ranked): reliable members make it smaller,
    never larger.
    """
    if not candidates:
        return candidates, 0
    p = acceptance_probabilities(
        session, settings, [c.member_id for c in candidates], exercise=exercise, now=now
    )
    order = arrival_order([c.eta_s for c in candidates], p)
    ordered = [candidates[i] for i in order.tolist()]
    cap = first_wave_size(needed, settings)
    size = wave_size(p[order], needed, confidence=settings.wave_confidence, cap=cap)
    return ordered, max(1, size)
