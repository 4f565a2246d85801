"""Group texts: a coordinator's or the point contact's message to a buddy group, via the outbox."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.groups import texts_repository as repo
from api.groups.errors import GroupNotFound, GroupTextKeyReused, GroupTextRateLimited
from api.idempotency import replayed, request_hash
from api.members.auth import is_coordinator
from api.members.crypto import contact_cipher
from api.members.errors import InvalidToken
from api.members.models import Member
from api.notify.service import enqueue_many, member_channels, purge
from api.settings import Settings
from api.types import PlainText, RequestModel

MAX_TEXT = 500
RATE_WINDOW = timedelta(hours=1)
MESSAGE_KIND = "group_message"


class GroupTextCreate(RequestModel):
    """POST /v1/groups/{group_id}/messages: a text to every member of the group."""

    text: PlainText = Field(min_length=1, max_length=MAX_TEXT)


class GroupTextRead(BaseModel):
    """How many the text went to; never who."""

    id: uuid.UUID
    sent_count: int
    created_at: datetime


def send_text(
    session: Session,
    settings: Settings,
    *,
    sender: Member,
    group_id: uuid.UUID,
    body: GroupTextCreate,
    idempotency_key: str,
    now: datetime,
) -> tuple[GroupTextRead, bool]:
    """Queue the text to each member (and the point contact) but the sender; False: a retry.

    Coordinators send to any current group, a point contact to its own; anyone else gets
    the same 404 as for a group that does not exist or was retired.
    """
    if not repo.lock_sender(session, sender.id):
        msg = "this token's member was erased"
        raise InvalidToken(msg)
    # The recipients next (FOR KEY SHARE), as an erasure takes a member row before the group
    # it is the point contact of: locking the group first deadlocked with one. Then the group:
    # texts to one group are counted against the rate one at a time.
    repo.lock_members_of(session, group_id)
    group = repo.lock_current_group(session, group_id)
    if group is None or not (is_coordinator(sender) or group.point_contact_id == sender.id):
        msg = f"no current group {group_id} you may send to"
        raise GroupNotFound(msg)
    digest = request_hash(body.model_dump(mode="json"))
    message_id = uuid.uuid4()
    existing = repo.claim(
        session,
        message_id=message_id,
        group_id=group.id,
        sender_id=sender.id,
        key=idempotency_key,
        request_hash=digest,
        now=now,
    )
    if existing is not None:
        msg = "this Idempotency-Key was already used for a different text to this group"
        return replayed(existing, digest, GroupTextRead, GroupTextKeyReused(msg)), False
    count, oldest = repo.sent_since(
        session, group.id, since=now - RATE_WINDOW, other_than=message_id
    )
    if count >= settings.group_message_rate:
        assert oldest is not None
        retry_after_s = max(1, math.ceil((oldest + RATE_WINDOW - now).total_seconds()))
        msg = (
            f"at most {settings.group_message_rate} texts an hour to one group; "
            f"retry in {retry_after_s} s"
        )
        # The claimed row goes with the transaction's rollback: nothing is written.
        raise GroupTextRateLimited(msg, retry_after_s=retry_after_s)
    cipher = contact_cipher(settings)
    reached = [
        m
        for m in repo.lock_recipients(session, group, exclude=sender.id)
        if member_channels(cipher, m.id, m.contact_ciphertext)
    ]
    payload = {
        "subject": "ern: a message to your buddy group",
        "text": f"ern, to your buddy group from {sender.handle}:\n{body.text}",
        "group_message": {
            "message_id": str(message_id),
            "group_id": str(group.id),
            "sender_handle": sender.handle,
            "text": body.text,
        },
    }
    enqueue_many(
        session,
        settings,
        messages=[(member, payload) for member in reached],
        alert_id=message_id,
        message_kind=MESSAGE_KIND,
        now=now,
    )
    message = repo.get(session, message_id)
    message.sent_count = len(reached)
    session.flush()
    return GroupTextRead(id=message_id, sent_count=len(reached), created_at=now), True


def purge_expired(session: Session, *, before: datetime) -> tuple[int, int, int]:
    """Forget group texts (and their outbox rows, which hold the text), publish notices (the
    outbox rows telling members who is in their group) and unpublished proposals made before
    ``before``, counted per month first; (texts, notices, proposals) gone."""
    from api.alerts.repository import add_purge_counts

    add_purge_counts(session, repo.purge_counts(session, before=before))
    ids = repo.delete_messages_before(session, before=before)
    purge(session, alert_ids=ids)
    notices = repo.delete_notices_before(session, before=before)
    return len(ids), notices, repo.delete_unpublished_proposals_before(session, before=before)
