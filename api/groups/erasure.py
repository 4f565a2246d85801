"""What an erased member leaves in buddy groups: its id goes from every group proposal."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from api.groups import texts_repository as repo

# Fields of a proposal's JSON whose value names a member: an object naming the erased one goes.
_ID_FIELDS = ("id", "member_id")


def forget_member(session: Session, member_id: uuid.UUID) -> None:
    """Scrub the member's id from every proposal's answer and parameters (erasure hook).

    Memberships go by ON DELETE CASCADE, a point contact and a text's sender by SET NULL.
    Proposals name members inside JSON, which no foreign key reaches: the id is taken out
    of every list and object (a published proposal's record too), the rest is kept, so a
    coordinator's review of an unpublished proposal survives one member leaving.
    """
    needle = str(member_id)
    for proposal in repo.proposals_naming(session, member_id):
        proposal.answer = scrub(proposal.answer, needle)
        proposal.params = scrub(proposal.params, needle)
    session.flush()


def scrub(value: Any, member_id: str) -> Any:
    """``value`` without ``member_id``: list items naming it dropped, object fields set null.

    An object naming it (``{id, handle}``) goes whole, not just its id: its other fields
    (a handle, a reason) are about the member too.
    """
    if isinstance(value, list):
        return [scrub(item, member_id) for item in value if not _names(item, member_id)]
    if isinstance(value, dict):
        return {
            key: None if _names(item, member_id) else scrub(item, member_id)
            for key, item in value.items()
            if key != member_id
        }
    return value


def _names(item: Any, member_id: str) -> bool:
    if item == member_id:
        return True
    return isinstance(item, dict) and any(item.get(f) == member_id for f in _ID_FIELDS)
