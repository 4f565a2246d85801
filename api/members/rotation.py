"""Rotating ERN_SECRET_KEY: contacts re-encrypted, phone index recomputed, webhook owners told."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.errors import ErnError
from api.members import repository
from api.members.crypto import contact_cipher, phone_index
from api.members.errors import ContactUnreadable
from api.members.service import audit
from api.notify.service import enqueue_many
from api.settings import Settings

# The outbox's message kind for "your webhook signing key changed" (its alert_id is the
# rotation's id, like a rally's notices carry the rally's).
KEY_CHANGED = "webhook_key_changed"
WEBHOOK_KEY_PATH = "/v1/members/me/webhook-key"


class RotationRefused(ErnError):
    """The rotation cannot run as asked (wrong old key, same key); nothing was changed."""


@dataclass(frozen=True)
class Rotation:
    """What one rotation did, in the transaction that did it."""

    rotation_id: uuid.UUID
    contacts: int  # contact records re-encrypted
    phones: int  # phone index entries recomputed
    told: int  # members with a webhook told that their signing key changed
    deliveries: int  # outbox rows queued to tell them


def key_changed_payload(settings: Settings, *, now: datetime) -> dict[str, Any]:
    """The notice a member with a webhook gets; it says where to fetch the new key."""
    url = WEBHOOK_KEY_PATH
    if settings.public_url is not None:
        url = str(settings.public_url).rstrip("/") + WEBHOOK_KEY_PATH
    text = (
        "ern's secret key was rotated, so the key your webhook's X-Ern-Signature is made with "
        f"has changed. Fetch the new one with your token: GET {url}. Messages from now on, "
        "this one included, are signed with the new key."
    )
    return {
        "subject": "ern: your webhook signing key changed",
        "text": text,
        "webhook_key": {"changed_at": now.isoformat(), "url": url},
    }


def rotate_secret_key(session: Session, *, old: Settings, new: Settings, now: datetime) -> Rotation:
    """Re-key every contact from ``old``'s secret to ``new``'s in the caller's transaction.

    Refuses (RotationRefused, nothing written) when the keys are equal or when the old key
    does not decrypt every stored contact: a wrong old key must not half-rotate the table.
    """
    if old.secret_bytes() == new.secret_bytes():
        msg = "the new ERN_SECRET_KEY is the old one: nothing to rotate"
        raise RotationRefused(msg)
    old_cipher, new_cipher = contact_cipher(old), contact_cipher(new)
    rows = repository.contacts_for_update(session)
    contacts: list[tuple[uuid.UUID, dict[str, Any]]] = []
    unreadable = 0
    for member_id, ciphertext in rows:
        try:
            contacts.append((member_id, old_cipher.decrypt(ciphertext)))
        except ContactUnreadable:
            unreadable += 1
    if unreadable:
        msg = (
            f"the old key does not decrypt the contact details of {unreadable} of "
            f"{len(rows)} members"
        )
        if _all_readable(new, [c for _, c in rows]):
            msg += " (they all decrypt with the new key: was this rotation done already?)"
        raise RotationRefused(msg + "; nothing was changed")
    repository.set_contacts(
        session,
        [
            (member_id, new_cipher.encrypt(contact), phone_index(new, contact.get("phone")))
            for member_id, contact in contacts
        ],
    )
    rotation_id = uuid.uuid4()
    told = [member_id for member_id, contact in contacts if contact.get("webhook_url")]
    payload = key_changed_payload(new, now=now)
    members = repository.members_by_id(session, told)
    queued = enqueue_many(
        session,
        new,
        messages=[(member, payload) for member in members],
        alert_id=rotation_id,
        message_kind=KEY_CHANGED,
        now=now,
    )
    audit(session, None, None, "secret_key.rotate")
    phones = sum(1 for _, contact in contacts if contact.get("phone"))
    return Rotation(
        rotation_id=rotation_id,
        contacts=len(contacts),
        phones=phones,
        told=len(members),
        deliveries=queued,
    )


def _all_readable(settings: Settings, ciphertexts: list[bytes]) -> bool:
    cipher = contact_cipher(settings)
    try:
        for ciphertext in ciphertexts:
            cipher.decrypt(ciphertext)
    except ContactUnreadable:
        return False
    return True
