"""All SQL of the members domain: members, tokens and audit events (repositories only flush)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.orm import Session, lazyload

from api.database import DriverStatement
from api.members.models import ApiToken, AuditEvent, Member


def members() -> Select[Member]:
    """Every member, in handle order."""
    return select(Member).order_by(Member.handle, Member.id)


def get_member(session: Session, member_id: uuid.UUID) -> Member | None:
    """The member with this id, or None."""
    return session.get(Member, member_id)


def get_member_by_handle(session: Session, handle: str) -> Member | None:
    """The member with this handle, or None."""
    return session.scalars(select(Member).where(Member.handle == handle)).one_or_none()


def handle_taken(session: Session, handle: str, *, besides: uuid.UUID | None = None) -> bool:
    """Whether another member (not ``besides``) uses ``handle``."""
    query = select(Member.id).where(Member.handle == handle)
    if besides is not None:
        query = query.where(Member.id != besides)
    return session.scalars(query.limit(1)).first() is not None


def list_members(session: Session, *, limit: int, offset: int) -> tuple[Sequence[Member], int]:
    """One page of members in handle order, and the total count."""
    total = session.scalar(select(func.count()).select_from(Member)) or 0
    page = session.scalars(members().limit(limit).offset(offset)).all()
    return page, total


def add_member(session: Session, member: Member) -> Member:
    """Insert a member with its zones and routes."""
    session.add(member)
    session.flush()
    return member


def touch(member: Member) -> None:
    """Set updated_at to now on the next flush (zones and routes live in other tables)."""
    member.updated_at = func.now()


def lock_member(session: Session, member_id: uuid.UUID) -> None:
    """Hold the member row until commit (FOR UPDATE), as its deletion will."""
    session.execute(select(Member.id).where(Member.id == member_id).with_for_update())


def delete_member(session: Session, member: Member) -> None:
    """Delete a member; zones, routes and tokens go with it (ON DELETE CASCADE)."""
    session.delete(member)
    session.flush()


def count_members(session: Session) -> int:
    """How many members exist."""
    return session.scalar(select(func.count()).select_from(Member)) or 0


def add_token(session: Session, member_id: uuid.UUID, token_hash: bytes) -> ApiToken:
    """Store a new token hash for a member."""
    token = ApiToken(member_id=member_id, token_hash=token_hash)
    session.add(token)
    session.flush()
    return token


def active_token(session: Session, token_hash: bytes) -> tuple[ApiToken, Member] | None:
    """The unrevoked token with this hash and its member, or None."""
    row = session.execute(
        select(ApiToken, Member)
        .join(Member, Member.id == ApiToken.member_id)
        .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
        # Every request authenticates; few need the caller's zones and routes. They load on
        # access instead of by two selectin queries each time (~8 % of POST /v1/alerts' CPU).
        .options(lazyload(Member.zones), lazyload(Member.routes))
    ).first()
    return (row[0], row[1]) if row is not None else None


# Built once (every request authenticates; building a statement costs more than running it).
_ACTIVE_CALLER = (
    select(ApiToken.id, Member.id, Member.handle, Member.roles)
    .join(Member, Member.id == ApiToken.member_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)
_ACTIVE_CALLER_SQL = DriverStatement.of(_ACTIVE_CALLER)


def active_caller(
    session: Session, token_hash: bytes
) -> tuple[uuid.UUID, uuid.UUID, str, list[str]] | None:
    """(token id, member id, handle, roles) of the unrevoked token with this hash, or None."""
    rows = _ACTIVE_CALLER_SQL.rows(session, {"token_hash": token_hash})
    return (rows[0][0], rows[0][1], rows[0][2], list(rows[0][3] or ())) if rows else None


def revoke_tokens(
    session: Session, member_id: uuid.UUID, *, at: datetime, token_id: uuid.UUID | None = None
) -> int:
    """Revoke a member's active tokens (only ``token_id`` if given); returns how many."""
    query = update(ApiToken).where(ApiToken.member_id == member_id, ApiToken.revoked_at.is_(None))
    if token_id is not None:
        query = query.where(ApiToken.id == token_id)
    query = query.values(revoked_at=at).execution_options(synchronize_session=False)
    result = session.execute(query)
    session.flush()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def add_audit(
    session: Session, *, actor_id: uuid.UUID | None, subject_id: uuid.UUID | None, action: str
) -> None:
    """Append one audit event (the database refuses to change it later)."""
    session.add(AuditEvent(actor_id=actor_id, subject_id=subject_id, action=action))
    session.flush()


def audit_events(session: Session, *, subject_id: uuid.UUID | None = None) -> Sequence[AuditEvent]:
    """Audit events, oldest first, optionally about one subject."""
    query = select(AuditEvent).order_by(AuditEvent.id)
    if subject_id is not None:
        query = query.where(AuditEvent.subject_id == subject_id)
    return session.scalars(query).all()


# --- rotating ERN_SECRET_KEY (api.members.rotation) ------------------------------------------


def contacts_for_update(session: Session) -> list[tuple[uuid.UUID, bytes]]:
    """(member id, contact ciphertext) of every member with contact details, rows locked."""
    query = (
        select(Member.id, Member.contact_ciphertext)
        .where(Member.contact_ciphertext.is_not(None))
        .order_by(Member.id)
        .with_for_update()
    )
    return [(row[0], bytes(row[1] or b"")) for row in session.execute(query)]


def set_contacts(session: Session, rows: Sequence[tuple[uuid.UUID, bytes, bytes | None]]) -> None:
    """New (ciphertext, phone index) per member id; updated_at stays: the details are the same.

    One statement over arrays: an executemany of 10,000 UPDATEs took several seconds.
    """
    if not rows:
        return
    ids, ciphertexts, indexes = zip(*rows, strict=True)
    session.execute(
        text(
            "UPDATE member SET contact_ciphertext = v.ciphertext, phone_index = v.phone_index "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:ciphertexts AS bytea[]), "
            "CAST(:indexes AS bytea[])) AS v(id, ciphertext, phone_index) WHERE member.id = v.id"
        ),
        {"ids": list(ids), "ciphertexts": list(ciphertexts), "indexes": list(indexes)},
    )


def members_by_id(session: Session, member_ids: Sequence[uuid.UUID]) -> Sequence[Member]:
    """These members, freshly read (not from the session's identity map), in id order."""
    if not member_ids:
        return []
    query = (
        select(Member)
        .where(Member.id.in_(member_ids))
        .order_by(Member.id)
        .options(lazyload(Member.zones), lazyload(Member.routes))
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).all()
