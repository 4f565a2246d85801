"""A buddy-group proposal: map matching, similarity, partition, point contacts, quality."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike

from geo.buddies.communities import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, partition
from geo.buddies.contacts import (
    DEFAULT_CONTACT_MAX_ETA_S,
    DEFAULT_MAX_GROUPS_PER_CONTACT,
    assign_contacts,
)
from geo.buddies.match import match_routes
from geo.buddies.overlap import similarity
from geo.buddies.quality import (
    Quality,
    locality_groups,
    mean_shared_minutes,
    random_groups,
    shared_minutes_per_group,
)
from geo.graph import StreetGraph
from geo.snap import Snapper


@dataclass(frozen=True)
class Proposal:
    """Groups (member indices), point contacts, unplaced members and the quality report."""

    groups: list[list[int]]
    point_contact: list[int | None]
    contact_eta_s: list[float | None]
    shared_minutes: list[float]
    unplaced: list[int]
    no_contact: list[int]  # group indices without a contact within the limit
    unmatched: dict[int, str]
    quality: Quality
    timings_s: dict[str, float] = field(default_factory=dict)


def propose(
    graph: StreetGraph,
    snapper: Snapper,
    *,
    n_members: int,
    route_member: ArrayLike,
    route_lines: Sequence[shapely.LineString],
    route_days: ArrayLike,
    route_start_s: ArrayLike,
    route_end_s: ArrayLike,
    home_lon: ArrayLike,
    home_lat: ArrayLike,
    defence: ArrayLike,
    max_size: int = DEFAULT_MAX_SIZE,
    min_size: int = DEFAULT_MIN_SIZE,
    keep: Sequence[Sequence[int]] = (),
    max_groups_per_contact: int = DEFAULT_MAX_GROUPS_PER_CONTACT,
    contact_max_eta_s: float = DEFAULT_CONTACT_MAX_ETA_S,
    seed: int = 0,
    clock: Any = None,
) -> Proposal:
    """A buddy-group proposal: match, similarity, partition, point contacts, quality.

    Parameters
    ----------
    graph, snapper
        The mode's graph and its snapper.
    n_members
        Members are ``0..n_members-1``.
    route_member, route_lines, route_days, route_start_s, route_end_s
        Per route: member, line, weekday mask, window.
    home_lon, home_lat
        Home-zone centre per member (NaN for none).
    defence
        Member indices holding the defence role (point contact candidates).
    max_size, min_size, keep, seed
        See :func:`partition`.
    max_groups_per_contact, contact_max_eta_s
        See :func:`assign_contacts`.
    clock
        Zero-argument timer for the timings (e.g. ``time.perf_counter``); None for none.

    Returns
    -------
    The proposal.
    """
    tick = clock if clock is not None else (lambda: 0.0)
    timings: dict[str, float] = {}
    t0 = tick()
    matching = match_routes(graph, snapper, route_lines)
    t1 = tick()
    timings["map_matching_s"] = t1 - t0
    hlon = np.asarray(home_lon, dtype=np.float64)
    hlat = np.asarray(home_lat, dtype=np.float64)
    has_home = np.isfinite(hlon) & np.isfinite(hlat)
    home_node = np.full(n_members, -1, dtype=np.int64)
    if has_home.any():
        home_node[has_home] = snapper.snap(hlon[has_home], hlat[has_home])[0]
    sim = similarity(
        matching,
        route_member,
        route_days,
        route_start_s,
        route_end_s,
        n_members,
        home_node=home_node,
        graph=graph,
    )
    t2 = tick()
    timings["similarity_s"] = t2 - t1
    groups, unplaced = partition(
        sim.weight, max_size=max_size, min_size=min_size, keep=keep, seed=seed
    )
    t3 = tick()
    timings["partition_s"] = t3 - t2
    defence_a = np.asarray(defence, dtype=np.int64)
    defence_a = defence_a[home_node[defence_a] >= 0] if defence_a.size else defence_a
    group_nodes = [home_node[np.asarray(g)][home_node[np.asarray(g)] >= 0] for g in groups]
    contact_idx, eta = assign_contacts(
        graph,
        group_nodes,
        home_node[defence_a],
        max_groups_per_contact=max_groups_per_contact,
        max_eta_s=contact_max_eta_s,
    )
    contacts = [None if c is None else int(defence_a[c]) for c in contact_idx]
    t4 = tick()
    timings["contacts_s"] = t4 - t3
    # exact shared minutes within each grouping: the similarity keeps strong links only
    within = sim.shared_within(groups)
    per_group = shared_minutes_per_group(within, groups)
    sizes = [len(g) for g in groups]
    mean = mean_shared_minutes(within, groups)
    population = list(range(n_members))
    rand = 0.0
    if groups:
        draws = [random_groups(sizes, population, seed=seed + s) for s in range(5)]
        rand = float(np.mean([mean_shared_minutes(sim.shared_within(r), r) for r in draws]))
    local_members = [m for m in population if has_home[m]]
    local = locality_groups(hlon, hlat, local_members, max_size=max_size)
    local_mean = mean_shared_minutes(sim.shared_within(local), local)
    hist: dict[int, int] = {}
    for s in sizes:
        hist[s] = hist.get(s, 0) + 1
    quality = Quality(
        mean_shared_minutes=mean,
        random_baseline=rand,
        locality_baseline=local_mean,
        placed_share=(n_members - len(unplaced)) / n_members if n_members else 0.0,
        size_histogram=dict(sorted(hist.items())),
        contact_eta_s=eta,
    )
    timings["quality_s"] = tick() - t4
    return Proposal(
        groups=groups,
        point_contact=contacts,
        contact_eta_s=eta,
        shared_minutes=per_group,
        unplaced=unplaced,
        no_contact=[i for i, c in enumerate(contacts) if c is None],
        unmatched={int(r): why for r, why in matching.unmatched.items()},
        quality=quality,
        timings_s=timings,
    )
