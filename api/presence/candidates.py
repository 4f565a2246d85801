"""What a ranking answers: candidates best first, and how their ETAs were computed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Candidate:
    """A member who could respond, with the ETA (mobilisation included)."""

    member_id: uuid.UUID
    handle: str
    roles: frozenset[str]
    mode: str
    eta_s: float
    # The notification channels the member's contact has; None when the index was built
    # without contacts (the caller reads them from the member's record).
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Ranking:
    """Candidates best first, and how their ETAs were computed."""

    candidates: list[Candidate]
    method: Literal["street_network", "straight_line"]
