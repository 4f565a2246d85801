"""Buddy groups: map-matched route overlap -> similarity graph -> capped groups, point contacts.

One module per step, in the order :func:`propose` runs them: ``match`` (routes -> street
edges), ``overlap`` (:func:`similarity`, sparse member x member), ``communities``
(:func:`partition`, capped groups), ``contacts`` (defence point contacts), ``quality``
(against random and locality groups); ``pipeline`` chains them. Modules are not named
after the functions they hold, so that ``geo.buddies.partition`` is the function.
Everything public is importable from ``geo.buddies``.
"""

from __future__ import annotations

from geo.buddies.communities import (
    DEFAULT_MAX_LINKS,
    DEFAULT_MAX_SIZE,
    DEFAULT_MIN_SIZE,
    DEFAULT_RESOLUTION,
    HARD_MAX_SIZE,
    partition,
)
from geo.buddies.contacts import (
    DEFAULT_CONTACT_MAX_ETA_S,
    DEFAULT_MAX_GROUPS_PER_CONTACT,
    assign_contacts,
)
from geo.buddies.match import (
    MATCH_MAX_GAP_M,
    MATCH_MAX_GAP_S,
    MATCH_MAX_SNAP_M,
    Matching,
    edge_lengths_m,
    match_routes,
)
from geo.buddies.overlap import (
    HOME_MAX_S,
    HOME_NEIGHBOURS,
    HOME_WEIGHT,
    Similarity,
    similarity,
)
from geo.buddies.pipeline import Proposal, propose
from geo.buddies.quality import (
    Quality,
    locality_groups,
    mean_shared_minutes,
    random_groups,
    shared_minutes_per_group,
)

__all__ = [
    "DEFAULT_CONTACT_MAX_ETA_S",
    "DEFAULT_MAX_GROUPS_PER_CONTACT",
    "DEFAULT_MAX_LINKS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MIN_SIZE",
    "DEFAULT_RESOLUTION",
    "HARD_MAX_SIZE",
    "HOME_MAX_S",
    "HOME_NEIGHBOURS",
    "HOME_WEIGHT",
    "MATCH_MAX_GAP_M",
    "MATCH_MAX_GAP_S",
    "MATCH_MAX_SNAP_M",
    "Matching",
    "Proposal",
    "Quality",
    "Similarity",
    "assign_contacts",
    "edge_lengths_m",
    "locality_groups",
    "match_routes",
    "mean_shared_minutes",
    "partition",
    "propose",
    "random_groups",
    "shared_minutes_per_group",
    "similarity",
]
