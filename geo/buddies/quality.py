"""Quality of buddy groups: shared minutes within groups, random and locality baselines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.sparse import csr_matrix


@dataclass(frozen=True)
class Quality:
    """How good a grouping is, against baselines of the same caps."""

    mean_shared_minutes: float
    random_baseline: float
    locality_baseline: float
    placed_share: float
    size_histogram: dict[int, int]
    contact_eta_s: list[float | None]


def mean_shared_minutes(shared: csr_matrix, groups: Sequence[Sequence[int]]) -> float:
    """Mean over grouped members of the minutes a week shared with their own group.

    Parameters
    ----------
    shared
        Member x member shared minutes.
    groups
        Member indices per group.

    Returns
    -------
    The mean (0 for no grouped member).
    """
    n = shared.shape[0]
    label = np.full(n, -1, dtype=np.int64)
    for g, ms in enumerate(groups):
        label[np.asarray(ms, dtype=np.int64)] = g
    grouped = int((label >= 0).sum())
    if grouped == 0:
        return 0.0
    s = shared.tocoo()
    same = (label[s.row] >= 0) & (label[s.row] == label[s.col])
    return float(s.data[same].sum() / grouped)


def shared_minutes_per_group(shared: csr_matrix, groups: Sequence[Sequence[int]]) -> list[float]:
    """Per group, the mean minutes a week a member shares with the rest of its group."""
    n = shared.shape[0]
    label = np.full(n, -1, dtype=np.int64)
    for g, ms in enumerate(groups):
        label[np.asarray(ms, dtype=np.int64)] = g
    s = shared.tocoo()
    same = (label[s.row] >= 0) & (label[s.row] == label[s.col])
    tot = np.bincount(label[s.row[same]], weights=s.data[same], minlength=len(groups))
    return [float(t / len(ms)) for t, ms in zip(tot, groups, strict=True)]


def random_groups(sizes: Sequence[int], population: Sequence[int], *, seed: int) -> list[list[int]]:
    """Random groups of the given sizes drawn from ``population`` (baseline)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.asarray(population, dtype=np.int64))
    out, at = [], 0
    for s in sizes:
        out.append(perm[at : at + s].tolist())
        at += s
    return out


def locality_groups(
    lon: ArrayLike, lat: ArrayLike, members: Sequence[int], *, max_size: int
) -> list[list[int]]:
    """Home-zone centres clustered by recursive median bisection into groups of <= max_size.

    Parameters
    ----------
    lon, lat
        Home-zone centre per member (all members).
    members
        Members to group.
    max_size
        Cap.

    Returns
    -------
    Member indices per group.
    """
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    idx = np.asarray(members, dtype=np.int64)
    if idx.size:
        x = x * np.cos(np.radians(float(np.nanmean(y[idx]))))
    out: list[list[int]] = []
    stack = [idx]
    while stack:
        cur = stack.pop()
        if cur.size <= max_size:
            if cur.size:
                out.append(cur.tolist())
            continue
        # split on the wider axis, into halves whose sizes keep groups full
        axis = x if np.ptp(x[cur]) >= np.ptp(y[cur]) else y
        order = cur[np.argsort(axis[cur], kind="stable")]
        chunks = math.ceil(cur.size / max_size)
        cut = (chunks // 2) * max_size if chunks > 1 else cur.size // 2
        stack.extend([order[:cut], order[cut:]])
    return out
