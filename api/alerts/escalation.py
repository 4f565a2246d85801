"""Wave escalation: when too few accepted in time, notify the next wave from the ranked reserve."""

from __future__ import annotations

import logging
import math
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from api.alerts import repository as repo
from api.alerts.messages import notify_alert
from api.alerts.models import Alert
from api.alerts.raising import top_up_reserve
from api.alerts.service import purge_alerts
from api.clock import Clock, SystemClock
from api.database import database_away, transaction
from api.graphs import GraphStore
from api.groups.texts import purge_expired as purge_groups
from api.members.rotation import KEY_CHANGED
from api.notify.service import purge, purge_kind
from api.presence.ranking import away_member_ids
from api.presence.service import purge_expired_locations
from api.rallies import repository as rallies_repo
from api.settings import Settings
from api.sms import repository as sms_repo

log = logging.getLogger("ern.escalation")
# How long an unfulfilled alert keeps ranking again for people who came into reach.
ESCALATION_HORIZON = timedelta(minutes=30)


def escalate(
    session: Session,
    settings: Settings,
    graphs: GraphStore | None,
    *,
    alert: Alert,
    now: datetime,
) -> int:
    """Send the next wave of a due alert (locked by the caller); returns how many were notified."""
    accepted = repo.count_in_states(session, alert.id, ("accepted",))
    missing = alert.needed - accepted
    if missing <= 0:
        # Defensive: answers fulfil the alert themselves; nothing to escalate.
        alert.next_wave_at = None
        return 0
    size = math.ceil(missing / settings.acceptance_rate - 1e-9)
    if graphs is not None and repo.count_in_states(session, alert.id, ("ranked",)) < size:
        # The reserve ranked at the start runs short: people may have come into reach since.
        top_up_reserve(session, graphs, settings, alert=alert, now=now)
    # Someone in reserve who snoozed or accepted another alert since is passed over (and
    # stays in reserve: the snooze may end before the next wave).
    away = away_member_ids(session, at=now)
    picked = repo.rows_in_states(session, alert.id, ("ranked",), limit=size, skip=away)
    # Members before their rows (see lock_members); one who left just now is not notified.
    present = repo.lock_members(session, [row.member_id for row in picked])
    rows = [row for row in picked if row.member_id in present]
    wave = alert.wave + 1
    ids = [row.member_id for row in rows]
    repo.mark_notified(session, alert.id, ids, wave=wave, now=now)
    if ids:
        alert.wave = wave
    reserve_left = repo.count_in_states(session, alert.id, ("ranked",)) > 0
    # With graphs, an empty reserve is looked at again (newcomers) until the horizon.
    keep_looking = graphs is not None and now - alert.created_at < ESCALATION_HORIZON
    if reserve_left or keep_looking:
        alert.next_wave_at = now + timedelta(seconds=settings.wave_timeout_s)
    else:
        alert.next_wave_at = None
    notify_alert(
        session,
        settings,
        alert=alert,
        requester_handle=repo.handle_of(session, alert.requester_id),
        etas={row.member_id: row.eta_s for row in rows},
        now=now,
    )
    session.flush()
    return len(ids)


@dataclass(frozen=True)
class Purged:
    """What one retention pass deleted."""

    alerts: int
    live_locations: int
    # Processed inbound SMS ids (and the replies they got, which may name an alert's place).
    sms_replies: int = 0
    rallies: int = 0
    # Group texts (with their outbox rows) and unpublished group proposals.
    group_messages: int = 0
    group_proposals: int = 0
    # Publish notices (outbox kinds group, group_contact): who is in a group with whom.
    group_notices: int = 0
    # "Your webhook signing key changed" notices of `ern admin rotate-secret-key`.
    key_notices: int = 0


def purge_expired(session: Session, settings: Settings, *, now: datetime) -> Purged:
    """Delete what the service must not keep: expired live locations, alerts past retention."""
    retention = timedelta(days=settings.alert_retention_days)
    texts, notices, proposals = purge_groups(
        session, before=now - timedelta(days=settings.group_retention_days)
    )
    return Purged(
        alerts=purge_alerts(session, before=now - retention),
        live_locations=purge_expired_locations(session, now=now),
        sms_replies=sms_repo.purge_before(session, before=now - retention),
        rallies=_purge_rallies(session, before=now - retention),
        group_messages=texts,
        group_proposals=proposals,
        group_notices=notices,
        key_notices=purge_kind(session, message_kind=KEY_CHANGED, before=now - retention),
    )


def _purge_rallies(session: Session, *, before: datetime) -> int:
    # Rally notices' outbox rows hold the place like alerts' do: gone after the same retention.
    ids = rallies_repo.delete_before(session, before=before)
    purge(session, alert_ids=ids)
    return len(ids)


class EscalationWorker:
    """Escalates due alerts; several workers may run at once (FOR UPDATE SKIP LOCKED).

    Every ``purge_interval_s`` it also runs the retention pass (purge_expired).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        graphs: GraphStore | None = None,
        *,
        clock: Clock | None = None,
        max_per_run: int = 100,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        # For ranking again when an alert's reserve runs short (None: only the reserve is used).
        self.graphs = graphs
        self.clock = clock or SystemClock()
        self.max_per_run = max_per_run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_purge: datetime | None = None

    def purge_once(self) -> Purged:
        """One retention pass, in its own transaction."""
        with transaction(self.session_factory) as session:
            purged = purge_expired(session, self.settings, now=self.clock.now())
        counts = asdict(purged)
        if any(counts.values()):
            # Counts only: what kind of row went, never which.
            log.info(
                "retention: deleted %s",
                ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items() if n),
            )
        return purged

    def purge_if_due(self) -> None:
        """purge_once() if purge_interval_s has passed since the last one (or there was none)."""
        now = self.clock.now()
        if self._next_purge is None or now >= self._next_purge:
            self._next_purge = now + timedelta(seconds=self.settings.purge_interval_s)
            self.purge_once()

    def run_once(self) -> int:
        """Escalate every alert due now, one transaction each; returns how many alerts escalated."""
        done = 0
        for _ in range(self.max_per_run):
            current: uuid.UUID | None = None
            try:
                with transaction(self.session_factory) as session:
                    now = self.clock.now()
                    alert = repo.lock_due_alert(session, now=now)
                    if alert is None:
                        break
                    current = alert.id
                    notified = escalate(session, self.settings, self.graphs, alert=alert, now=now)
                    log.info("alert %s: wave %d, %d notified", alert.id, alert.wave, notified)
            except Exception:
                if current is None:
                    raise
                # One alert that cannot escalate must not hold up the others behind it.
                log.exception("alert %s: escalation failed; retrying after a wave timeout", current)
                self._postpone(current)
                continue
            done += 1
        return done

    def _postpone(self, alert_id: uuid.UUID) -> None:
        with transaction(self.session_factory) as session:
            now = self.clock.now()
            repo.postpone_wave(
                session, alert_id, until=now + timedelta(seconds=self.settings.wave_timeout_s)
            )

    def start(self) -> None:
        """Run in a daemon thread: one pass at once, then one every worker_poll_s."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ern-escalation", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        # A pass first, then wait: a started worker always catches up with what is already due.
        while True:
            try:
                self.run_once()
            except Exception as exc:
                if database_away(exc):  # a restart or failover: expected, no traceback
                    log.warning("escalation: database unavailable (%s)", type(exc).__name__)
                else:
                    log.exception("escalation pass failed; retrying")
            try:
                self.purge_if_due()
            except Exception as exc:
                if database_away(exc):
                    log.warning("retention: database unavailable (%s)", type(exc).__name__)
                else:
                    log.exception("retention pass failed; retrying at the next interval")
            if self._stop.wait(self.settings.worker_poll_s):
                return
