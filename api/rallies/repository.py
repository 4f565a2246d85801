"""All SQL of rallies: claim an idempotency key, record the count, purge old ones."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from api.idempotency import claim as claim_key
from api.rallies.models import Rally


def claim(
    session: Session,
    *,
    rally_id: uuid.UUID,
    coordinator_id: uuid.UUID,
    key: str,
    request_hash: bytes,
    now: datetime,
) -> Rally | None:
    """Insert the rally row; None if new, else the rally this key already made.

    A concurrent first use of the key holds the row until it commits, so a retry waits.
    """
    return claim_key(
        session,
        Rally,
        constraint="uq_rally_coordinator_key",
        values={
            "id": rally_id,
            "coordinator_id": coordinator_id,
            "idempotency_key": key,
            "request_hash": request_hash,
            "sent_count": 0,
            "created_at": now,
        },
        match=(Rally.coordinator_id == coordinator_id, Rally.idempotency_key == key),
    )


def get(session: Session, rally_id: uuid.UUID) -> Rally | None:
    """The rally row."""
    return session.get(Rally, rally_id)


def delete_before(session: Session, *, before: datetime) -> list[uuid.UUID]:
    """Delete rallies created before ``before``; their ids (their outbox rows go with them)."""
    stmt = delete(Rally).where(Rally.created_at < before).returning(Rally.id)
    return list(session.scalars(stmt))
