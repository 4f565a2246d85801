"""Notify logic: enqueue one delivery per channel a member has, backoff, cancelling and listing."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.members.crypto import ContactCipher, contact_cipher
from api.members.errors import ContactUnreadable
from api.members.models import Member
from api.members.service import audit
from api.notify import repository as repo
from api.notify.models import CHANNELS
from api.notify.schemas import DeliveryPage, DeliveryRead
from api.settings import Settings

log = logging.getLogger("ern.notify")
_SIGNALLED = "ern.notify.signalled"

# The contact field each channel sends to.
CONTACT_FIELD = {"webhook": "webhook_url", "email": "email", "sms": "phone"}


def delivery_id(alert_id: uuid.UUID, member_id: uuid.UUID, channel: str, message_kind: str) -> str:
    """The stable id of one delivery: the same on every attempt, so receivers drop duplicates."""
    return f"{alert_id}:{member_id}:{channel}:{message_kind}"


def channels_of(contact: dict[str, Any]) -> list[str]:
    """The channels a member's contact details allow, in a fixed order."""
    return [channel for channel in CHANNELS if contact.get(CONTACT_FIELD[channel])]


def member_channels(
    cipher: ContactCipher, member_id: uuid.UUID, ciphertext: bytes | None
) -> tuple[str, ...]:
    """The channels a member's encrypted contact allows; none when it cannot be decrypted.

    One unreadable record must not stop an alert from reaching everyone else: it is logged
    and the member gets nothing.
    """
    try:
        return tuple(channels_of(cipher.decrypt(ciphertext)))
    except ContactUnreadable:
        log.error("member %s: contact details unreadable, not notified", member_id)
        return ()


def enqueue(
    session: Session,
    settings: Settings,
    *,
    member: Member,
    alert_id: uuid.UUID,
    message_kind: str,
    payload: dict[str, Any],
    now: datetime,
) -> int:
    """Queue ``payload`` to each channel of ``member`` in the caller's transaction; rows made."""
    return enqueue_many(
        session,
        settings,
        messages=[(member, payload)],
        alert_id=alert_id,
        message_kind=message_kind,
        now=now,
    )


def enqueue_many(
    session: Session,
    settings: Settings,
    *,
    messages: Sequence[tuple[Member, dict[str, Any]]],
    alert_id: uuid.UUID,
    message_kind: str,
    now: datetime,
) -> int:
    """enqueue() for many (member, payload) pairs in one INSERT; rows made."""
    return enqueue_each(
        session,
        settings,
        messages=[(alert_id, member, message_kind, payload) for member, payload in messages],
        now=now,
    )


def enqueue_each(
    session: Session,
    settings: Settings,
    *,
    messages: Sequence[tuple[uuid.UUID, Member, str, dict[str, Any]]],
    now: datetime,
) -> int:
    """enqueue_many() with each message's own alert id and kind (e.g. a publish's notices to
    every group: one id per group) in one INSERT; rows made."""
    cipher = contact_cipher(settings)
    rows: list[dict[str, Any]] = []
    for alert_id, member, message_kind, payload in messages:
        rows.extend(
            {
                "delivery_id": delivery_id(alert_id, member.id, channel, message_kind),
                "alert_id": alert_id,
                "member_id": member.id,
                "channel": channel,
                "message_kind": message_kind,
                "payload": payload,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for channel in member_channels(cipher, member.id, member.contact_ciphertext)
        )
    created = repo.insert_deliveries(session, rows)
    if created:
        _signal_once(session)
    return created


def _signal_once(session: Session) -> None:
    # One NOTIFY per transaction is enough (and PostgreSQL would fold repeats anyway).
    transaction = session.get_transaction()
    if transaction is None or session.info.get(_SIGNALLED) is transaction:
        return
    repo.signal_workers(session)
    session.info[_SIGNALLED] = transaction


def purge(session: Session, *, alert_ids: Sequence[uuid.UUID]) -> int:
    """Delete the outbox rows of alerts being purged (payloads hold alert locations); rows gone."""
    return repo.delete_for_alerts(session, alert_ids)


def purge_kind(session: Session, *, message_kind: str, before: datetime) -> int:
    """Delete the outbox rows of a kind that belongs to no alert (e.g. key notices); rows gone."""
    return repo.delete_kind_before(session, message_kind=message_kind, before=before)


def cancel(
    session: Session,
    *,
    alert_id: uuid.UUID,
    member_ids: list[uuid.UUID] | None = None,
    message_kind: str | None = None,
) -> int:
    """Cancel an alert's deliveries not yet attempted (e.g. alert messages after a stand-down)."""
    return repo.cancel_pending(
        session, alert_id=alert_id, member_ids=member_ids, message_kind=message_kind
    )


def backoff_s(
    attempt: int,
    settings: Settings,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next attempt: capped exponential with equal jitter, at least Retry-After.

    A Retry-After beyond ``backoff_cap_s`` is clamped to the cap: an alert is worthless hours later.
    """
    ceiling = min(settings.backoff_cap_s, settings.backoff_base_s * 2.0 ** max(0, attempt - 1))
    delay = ceiling * (0.5 + 0.5 * (rng or random).random())
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, settings.backoff_cap_s))
    return delay


def list_deliveries(
    session: Session,
    *,
    actor: Member,
    alert_id: uuid.UUID | None,
    state: str | None,
    limit: int,
    offset: int,
) -> DeliveryPage:
    """One page of deliveries for coordinators: states and errors, no contact details (audited)."""
    audit(session, actor, None, "delivery.list")
    rows, total = repo.list_deliveries(
        session, alert_id=alert_id, state=state, limit=limit, offset=offset
    )
    items = [DeliveryRead.model_validate(row) for row in rows]
    for item in items:
        # A finished row's next_attempt_at is bookkeeping, not a plan.
        if item.state not in ("pending", "sending"):
            item.next_attempt_at = None
    return DeliveryPage(items=items, total=total, limit=limit, offset=offset)
