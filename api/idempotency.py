"""Idempotency-Key: the header, the request hash a retry must repeat, claiming a key, the answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from fastapi import Header, Response
from pydantic import BaseModel
from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="required; a retry with the same key and body sends nothing again",
    ),
]
T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)


def request_hash(data: Mapping[str, Any]) -> bytes:
    """SHA-256 of a body's canonical JSON (keys sorted, no spaces)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def claim(
    session: Session,
    model: type[T],
    *,
    constraint: str,
    values: Mapping[str, Any],
    match: tuple[ColumnElement[bool], ...],
) -> T | None:
    """Insert the row for a key; None if it is new, else the row the key already made.

    ``constraint`` is the unique constraint over (owner, key) and ``match`` selects that row.
    A concurrent first use of the key holds the row until it commits, so a retry waits.
    """
    stmt = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(constraint=constraint)
        .returning(model.id)  # type: ignore[attr-defined]
    )
    if session.execute(stmt).scalar_one_or_none() is not None:
        return None
    return session.scalars(select(model).where(*match)).one()


def replayed(existing: Any, digest: bytes, read: type[R], reused: Exception) -> R:
    """A retry's answer, built from the row the key made (``read``'s fields by name).

    Raises ``reused`` when the key came with a different body (``request_hash`` differs).
    """
    if existing.request_hash != digest:
        raise reused
    return read.model_validate(existing, from_attributes=True)


def created_or_replayed(read: BaseModel, *, created: bool) -> Response:
    """201 with the answer, or 200 with ``Idempotent-Replayed: true`` for a retry."""
    return Response(
        read.model_dump_json(),
        status_code=201 if created else 200,
        media_type="application/json",
        headers=None if created else {"Idempotent-Replayed": "true"},
    )
