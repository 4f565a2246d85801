"""Alert retention (purge_alerts); the rest of the alert lifecycle lives beside this module.

One idea a file: ``raising.py`` (raise an alert: idempotent, rate-limited, ranked, first
wave; top up the reserve), ``acceptance.py`` (acceptance probabilities, arrival order, wave
size), ``answers.py`` (accept, decline, fulfil, close), ``messages.py`` (what members are
sent, ``location_text``), ``views.py`` (who sees an alert as whom, and each party's view),
``facts.py`` (an alert's facts and place). The names re-exported below keep older imports
working.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from api.alerts import repository as repo
from api.alerts.acceptance import (
    HISTORY_WINDOW,
    acceptance_probabilities,
    arrival_ranking,
    first_wave_size,
)
from api.alerts.answers import close, fulfil, respond
from api.alerts.facts import AlertFacts, lonlat
from api.alerts.messages import alert_payload, location_text, notify_alert, respond_url
from api.alerts.raising import (
    IDEMPOTENCY_WINDOW,
    KIND_ROLES,
    RATE_WINDOW,
    RESERVE_WAVES,
    create_alert,
    create_alert_as,
    request_hash,
    top_up_reserve,
)
from api.alerts.views import (
    AlertAccess,
    Party,
    coordinator_view,
    read_alert,
    requester_view,
    responder_view,
    view_as_creator,
    view_for,
    visible_alert,
)
from api.notify.service import purge

__all__ = [
    "HISTORY_WINDOW",
    "IDEMPOTENCY_WINDOW",
    "KIND_ROLES",
    "RATE_WINDOW",
    "RESERVE_WAVES",
    "AlertAccess",
    "AlertFacts",
    "Party",
    "acceptance_probabilities",
    "alert_payload",
    "arrival_ranking",
    "close",
    "coordinator_view",
    "create_alert",
    "create_alert_as",
    "first_wave_size",
    "fulfil",
    "location_text",
    "lonlat",
    "notify_alert",
    "purge_alerts",
    "read_alert",
    "request_hash",
    "requester_view",
    "respond",
    "respond_url",
    "responder_view",
    "top_up_reserve",
    "view_as_creator",
    "view_for",
    "visible_alert",
]


def purge_alerts(session: Session, *, before: datetime) -> int:
    """Forget alerts closed (never closed: raised) before ``before``, and their outbox rows."""
    # Counted first, in the same transaction: statistics survive the rows (purge_count).
    repo.add_purge_counts(session, repo.purge_counts(session, before=before))
    ids = repo.delete_alerts_before(session, before=before)
    repo.delete_erased(session, ids)
    purge(session, alert_ids=ids)
    return len(ids)
