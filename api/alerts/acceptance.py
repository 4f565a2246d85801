"""Who is likely to accept: acceptance probabilities, arrival order, the first wave's size."""

from __future__ import annotations

import math
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
    exercises.
    """
    per, (net_accepted, net_notified) = repo.acceptance_history(
        session, member_ids, since=now - HISTORY_WINDOW, include_exercises=exercise
    )
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
