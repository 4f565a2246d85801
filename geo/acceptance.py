"""Acceptance probabilities: Beta-shrunk estimates, Poisson-binomial wave sizes, arrival order."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Ordering bands of expected time to arrival (ETA / p): members in different bands are ordered
# by it, members in the same band by ETA. A band spans a factor of 1.5.
ARRIVAL_BAND_FACTOR = 1.5


def shrunk_rates(
    accepted: ArrayLike, notified: ArrayLike, *, prior_rate: float, prior_n: float
) -> NDArray[np.float64]:
    """Each member's acceptance probability, its own record shrunk toward ``prior_rate``.

    Parameters
    ----------
    accepted, notified
        Per member: alerts accepted, and alerts notified with a known outcome.
    prior_rate
        The network's rate (mean of the Beta prior).
    prior_n
        Weight of the prior in notifications: (accepted + n p0) / (notified + n).

    Returns
    -------
    Probabilities in [0, 1]; a member without history gets ``prior_rate``.
    """
    a = np.asarray(accepted, dtype=float)
    n = np.asarray(notified, dtype=float)
    if prior_n <= 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(n > 0, a / np.maximum(n, 1), prior_rate)
        return np.clip(out, 0.0, 1.0)
    out = (a + prior_n * prior_rate) / (n + prior_n)
    return np.clip(out, 0.0, 1.0)


def at_least_probabilities(p: ArrayLike, needed: int) -> NDArray[np.float64]:
    """P(at least ``needed`` of the first k accept) for k = 0..len(p), independent Bernoullis.

    Exact Poisson-binomial dynamic programme over counts 0..needed (the last state holds
    "needed or more"): O(len(p) x needed).
    """
    probs = np.asarray(p, dtype=float)
    dist = np.zeros(needed + 1)
    dist[0] = 1.0
    out = np.empty(probs.size + 1)
    out[0] = 1.0 if needed <= 0 else 0.0
    for k, q in enumerate(probs, start=1):
        top = dist[needed]
        moved = dist[:-1] * q
        dist[:-1] *= 1.0 - q
        dist[1:] += moved
        dist[needed] = top + moved[-1] if needed > 0 else 1.0
        out[k] = dist[needed]
    return out


def wave_size(p: ArrayLike, needed: int, *, confidence: float, cap: int | None = None) -> int:
    """The smallest prefix of ``p`` with P(at least ``needed`` accept) >= ``confidence``.

    No prefix reaches it: all of them. Never more than ``cap`` (when given).
    """
    probs = np.asarray(p, dtype=float)
    limit = probs.size if cap is None else min(cap, probs.size)
    at_least = at_least_probabilities(probs[:limit], needed)
    reached = np.flatnonzero(at_least >= confidence - 1e-12)
    return int(reached[0]) if reached.size else limit


def arrival_order(eta_s: ArrayLike, p: ArrayLike) -> NDArray[np.int64]:
    """Ranking order: by band of ETA / p (factor ARRIVAL_BAND_FACTOR), then ETA, then input order.

    ETA / p is the expected time to an arrival if this member alone were asked again and
    again; a member is placed before a nearer one only when that is at least one band lower,
    i.e. the difference is large, not noise in the estimates.
    """
    eta = np.asarray(eta_s, dtype=float)
    probs = np.maximum(np.asarray(p, dtype=float), 1e-6)
    expected = np.maximum(eta, 1.0) / probs
    band = np.floor(np.log(expected) / math.log(ARRIVAL_BAND_FACTOR))
    order = np.lexsort((np.arange(eta.size), eta, band))
    return order.astype(np.int64)
