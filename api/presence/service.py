"""Presence service functions: live locations, their purge, snoozes.

The rest of presence lives beside this module, each idea in its own file: ``index.py`` (the
in-memory PresenceIndex and its design), ``anchors.py`` (members' zones and routes snapped to
the graphs), ``segments.py`` (one mode's anchor indexes per week segment), ``cache.py`` (the
per-process cache and warm-up), ``ranking.py`` (rank_members, away members),
``candidates.py`` (Candidate, Ranking), ``area.py`` (the service-area check) and ``modes.py``
(travel modes, role bits, speeds). The names re-exported below keep older imports working.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from api.presence import repository as repo
from api.presence.area import check_in_service_area
from api.presence.cache import invalidate_presence, presence_index, warm_presence
from api.presence.candidates import Candidate, Ranking
from api.presence.errors import SnoozeOutOfRange
from api.presence.index import PresenceIndex
from api.presence.modes import MODES, ROLE_BITS, mask_of_roles, mode_speed_mps
from api.presence.ranking import away_member_ids, rank_members
from api.presence.schemas import LocationRead, SnoozeRead
from api.presence.segments import ModePresence
from api.settings import Settings
from api.types import Point

# Former private name, still imported by older code.
_roles_mask = mask_of_roles

__all__ = [
    "MODES",
    "ROLE_BITS",
    "Candidate",
    "ModePresence",
    "PresenceIndex",
    "Ranking",
    "away_member_ids",
    "check_in_service_area",
    "delete_location",
    "delete_snooze",
    "invalidate_presence",
    "mode_speed_mps",
    "presence_index",
    "purge_expired_locations",
    "put_location",
    "put_snooze",
    "rank_members",
    "snooze_until_resumed",
    "snoozed_until",
    "warm_presence",
]


def purge_expired_locations(session: Session, *, now: datetime) -> int:
    """Delete live locations that expired before ``now``; how many (the retention pass)."""
    return repo.purge_expired_locations(session, now=now)


def put_location(
    session: Session, settings: Settings, *, member_id: uuid.UUID, location: Point, now: datetime
) -> LocationRead:
    """Store the member's live location until now + live_location_ttl_s; purge expired ones."""
    expires_at = now + timedelta(seconds=settings.live_location_ttl_s)
    # Expired locations are of no use to anyone: they go as soon as anyone writes one.
    repo.purge_expired_locations(session, now=now)
    repo.put_location(
        session,
        member_id,
        lon=location.lon,
        lat=location.lat,
        updated_at=now,
        expires_at=expires_at,
    )
    return LocationRead(location=location, updated_at=now, expires_at=expires_at)


def delete_location(session: Session, *, member_id: uuid.UUID) -> bool:
    """Forget the member's live location; whether there was one."""
    return repo.delete_location(session, member_id)


# The longest snooze a member may ask for: people forget to turn alerts back on.
MAX_SNOOZE = timedelta(days=7)
# A snooze with no end ("stop" by SMS): it lasts until the member resumes.
UNTIL_RESUMED = datetime(9999, 12, 31, tzinfo=UTC)


def snoozed_until(member_until: datetime | None, *, now: datetime) -> datetime | None:
    """The end of a stored snooze as members and coordinators see it: None once it has passed."""
    if member_until is None or member_until <= now:
        return None
    return member_until


def put_snooze(
    session: Session, *, member_id: uuid.UUID, until: datetime, now: datetime
) -> SnoozeRead:
    """Snooze the member until ``until``: later than now, at most MAX_SNOOZE ahead (else 422)."""
    if until <= now:
        msg = "`until` must be in the future"
        raise SnoozeOutOfRange(msg)
    if until > now + MAX_SNOOZE:
        msg = f"`until` may be at most {MAX_SNOOZE.days} days ahead"
        raise SnoozeOutOfRange(msg)
    until = until.astimezone(UTC)
    repo.set_snooze(session, member_id, until=until)
    return SnoozeRead(snoozed_until=until)


def snooze_until_resumed(session: Session, *, member_id: uuid.UUID) -> None:
    """Snooze the member with no end (SMS "stop"); DELETE /v1/members/me/snooze resumes."""
    repo.set_snooze(session, member_id, until=UNTIL_RESUMED)


def delete_snooze(session: Session, *, member_id: uuid.UUID) -> None:
    """End the member's snooze now (idempotent)."""
    repo.set_snooze(session, member_id, until=None)
