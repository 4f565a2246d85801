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


# A record is (accepted, notified); the key is (database, exercise flag, member or None for
# the whole network).
Record = tuple[int, int]
RecordKey = tuple[str, bool, uuid.UUID | None]


class AcceptanceRecords:
    """Acceptance records (each member's and the network's), reused by one process a while.

    A record covers 90 days of closed alerts: a minute more or less hardly moves it, but
    reading it costs a query per alert whose work grows with the history (the network's
    totals read every outcome of the window). An alert whose candidates all have fresh
    records runs no query (and so flushes nothing: the raise path has nothing pending).
    Entries age by the alerts' own clock (``now``), so a test's clock ages them too; an entry
    from the future (a clock set back) is not used. Expired entries are dropped once the
    table has doubled since the last sweep.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[RecordKey, tuple[datetime, Record]] = {}
        self._sweep_at = 1024

    def fresh(
        self, keys: Sequence[RecordKey], *, now: datetime, ttl_s: float
    ) -> dict[RecordKey, Record]:
        """The records under ``keys`` counted less than ``ttl_s`` before ``now``."""
        with self._lock:
            entries = [(key, self._entries.get(key)) for key in keys]
        return {
            key: entry[1]
            for key, entry in entries
            if entry is not None and 0 <= (now - entry[0]).total_seconds() < ttl_s
        }

    def put(self, records: dict[RecordKey, Record], *, now: datetime, ttl_s: float) -> None:
        """Keep ``records`` as counted at ``now``; a record counted later is not replaced.

        (Alerts on other threads may count with an earlier ``now`` and finish last.)
        """
        with self._lock:
            for key, record in records.items():
                entry = self._entries.get(key)
                if entry is None or entry[0] <= now:
                    self._entries[key] = (now, record)
            if len(self._entries) >= self._sweep_at:
                self._entries = {
                    key: entry
                    for key, entry in self._entries.items()
                    if 0 <= (now - entry[0]).total_seconds() < ttl_s
                }
                self._sweep_at = max(1024, 2 * len(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sweep_at = 1024

    def __len__(self) -> int:
        return len(self._entries)


RECORDS = AcceptanceRecords()


def _database(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=True)


def _read_records(
    session: Session,
    settings: Settings,
    member_ids: Sequence[uuid.UUID],
    *,
    exercise: bool,
    now: datetime,
) -> tuple[list[Record], Record]:
    """Each member's record and the network's, from RECORDS where fresh, else counted."""
    ttl_s = settings.acceptance_record_ttl_s
    database = _database(session) if ttl_s > 0 else ""
    network_key: RecordKey = (database, exercise, None)
    keys: list[RecordKey] = [(database, exercise, m) for m in member_ids]
    known = RECORDS.fresh([network_key, *keys], now=now, ttl_s=ttl_s) if ttl_s > 0 else {}
    missing = [m for m, key in zip(member_ids, keys, strict=True) if key not in known]
    if missing or network_key not in known:
        per, network = repo.acceptance_history(
            session,
            missing,
            since=now - HISTORY_WINDOW,
            include_exercises=exercise,
            network=network_key not in known,
        )
        counted: dict[RecordKey, Record] = {
            (database, exercise, m): per.get(m, (0, 0)) for m in missing
        }
        if network is not None:
            counted[network_key] = network
        if ttl_s > 0:
            RECORDS.put(counted, now=now, ttl_s=ttl_s)
        known = {**known, **counted}
    return [known[key] for key in keys], known[network_key]


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
    exercises. Records are counted at most every ERN_ACCEPTANCE_RECORD_TTL_S per process
    (0: on every alert).
    """
    records, (net_accepted, net_notified) = _read_records(
        session, settings, member_ids, exercise=exercise, now=now
    )
    network = net_accepted / net_notified if net_notified else settings.acceptance_rate
    accepted = [a for a, _ in records]
    notified = [n for _, n in records]
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
