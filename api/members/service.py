"""Member logic: create, read, change and delete members, issue and revoke tokens, audit access."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from geoalchemy2.shape import from_shape, to_shape
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.groups import erasure as groups_erasure
from api.members import repository
from api.members.auth import is_coordinator
from api.members.crypto import contact_cipher, hash_token, new_token, phone_index
from api.members.errors import FieldNotAllowed, HandleTaken, InvalidMember, MemberNotFound
from api.members.models import FIELD_ROLES, Member, MemberRoute, MemberZone
from api.members.schemas import (
    Contact,
    MemberCreate,
    MemberPage,
    MemberRead,
    MemberSummary,
    MemberUpdate,
    QuietHours,
    RouteIn,
    RouteRead,
    ZoneIn,
    ZoneRead,
)
from api.members.service_area import Placed, check_member_geometry
from api.settings import Settings
from api.types import LineString, Polygon
from geo.errors import InvalidGeometry
from geo.validate import check_area, check_length, count_vertices

# Only coordinators may set these on a member (a member must not grant itself roles).
COORDINATOR_ONLY_FIELDS = frozenset({"roles"})


def audit(
    session: Session, actor: Member | None, subject_id: uuid.UUID | None, action: str
) -> None:
    """Record an access to someone else's record (a member's own accesses are not audited)."""
    actor_id = actor.id if actor is not None else None
    if actor_id is not None and actor_id == subject_id:
        return
    repository.add_audit(session, actor_id=actor_id, subject_id=subject_id, action=action)


def visible(session: Session, caller: Member, member_id: uuid.UUID) -> Member:
    """The member, if the caller may see it (itself, or anyone for a coordinator); else 404."""
    if caller.id == member_id:
        return caller
    member = repository.get_member(session, member_id) if is_coordinator(caller) else None
    if member is None:
        msg = f"no member {member_id}"
        raise MemberNotFound(msg)
    return member


# --- geometry limits that depend on settings -------------------------------------------------


def _check_zone(polygon: Polygon, settings: Settings, *, label: str) -> None:
    count_vertices(polygon.coordinates, label=label, max_vertices=settings.max_vertices)
    check_area(
        polygon.to_shapely(),
        label=label,
        min_m2=settings.min_zone_m2,
        max_m2=settings.max_zone_m2,
    )


def _check_route(path: LineString, settings: Settings, *, label: str) -> None:
    count_vertices([path.coordinates], label=label, max_vertices=settings.max_vertices)
    check_length(path.to_shapely(), label=label, max_m=settings.max_route_m)


def _check_geometry(
    settings: Settings,
    *,
    home_zone: Polygon | None,
    zones: Sequence[ZoneIn] | None,
    routes: Sequence[RouteIn] | None,
) -> None:
    if home_zone is not None:
        _check_zone(home_zone, settings, label="home_zone")
    for i, zone in enumerate(zones or ()):
        _check_zone(zone.area, settings, label=f"zones.{i}.area")
    for i, route in enumerate(routes or ()):
        _check_route(route.path, settings, label=f"routes.{i}.path")


def _placed(
    *,
    home_zone: Polygon | None,
    zones: Sequence[ZoneIn] | None,
    routes: Sequence[RouteIn] | None,
) -> list[Placed]:
    placed = [Placed("home_zone", home_zone.to_shapely())] if home_zone is not None else []
    placed += [Placed(f"zones.{i}.area", z.area.to_shapely()) for i, z in enumerate(zones or ())]
    placed += [Placed(f"routes.{i}.path", r.path.to_shapely()) for i, r in enumerate(routes or ())]
    return placed


def _stored_placed(member: Member, *, skip: set[str]) -> list[Placed]:
    """The member's stored geometries, except the fields in ``skip`` (being replaced)."""
    placed = []
    if "home_zone" not in skip and member.home_zone is not None:
        placed.append(Placed("home_zone (stored)", to_shape(member.home_zone)))
    if "zones" not in skip:
        placed += [
            Placed(f"zones.{i}.area (stored)", to_shape(z.area)) for i, z in enumerate(member.zones)
        ]
    if "routes" not in skip:
        placed += [
            Placed(f"routes.{i}.path (stored)", to_shape(r.path))
            for i, r in enumerate(member.routes)
        ]
    return placed


def _check_home_zone_rule(member: Member) -> None:
    needs = [r for r in FIELD_ROLES if member.has_role(r)]
    if needs and member.home_zone is None:
        msg = f"home_zone: a member with the {needs[0]} role needs a home zone"
        raise InvalidMember(msg)


# --- ORM <-> schema --------------------------------------------------------------------------


def _zone_row(zone: ZoneIn) -> MemberZone:
    return MemberZone(
        name=zone.name,
        area=from_shape(zone.area.to_shapely(), srid=4326),
        days=list(zone.days),
        start_time=zone.start,
        end_time=zone.end,
    )


def _route_row(route: RouteIn) -> MemberRoute:
    return MemberRoute(
        path=from_shape(route.path.to_shapely(), srid=4326),
        days=list(route.days),
        start_time=route.start,
        end_time=route.end,
        mode=route.mode,
    )


def _polygon(value: Any) -> Polygon | None:
    return None if value is None else Polygon.from_shapely(to_shape(value))


def to_read(member: Member, settings: Settings, *, now: datetime | None = None) -> MemberRead:
    """The full view of a member (for itself and coordinators only).

    ``now``: a snooze that ended before it shows as none (without: as stored).
    """
    snoozed = member.snoozed_until
    if snoozed is not None and now is not None and snoozed <= now:
        snoozed = None
    quiet = (
        QuietHours(start=member.quiet_start, end=member.quiet_end)
        if member.quiet_start is not None and member.quiet_end is not None
        else None
    )
    contact = contact_cipher(settings).decrypt(member.contact_ciphertext)
    return MemberRead(
        id=member.id,
        handle=member.handle,
        roles=list(member.roles),  # type: ignore[arg-type]
        mode=member.mode,  # type: ignore[arg-type]
        speed_mps=member.speed_mps,
        home_zone=_polygon(member.home_zone),
        zones=[
            ZoneRead.model_construct(
                id=z.id,
                name=z.name,
                area=_polygon(z.area),
                days=list(z.days),
                start=z.start_time,
                end=z.end_time,
            )
            for z in member.zones
        ],
        routes=[
            RouteRead.model_construct(
                id=r.id,
                path=LineString.from_shapely(to_shape(r.path)),
                days=list(r.days),
                start=r.start_time,
                end=r.end_time,
                mode=r.mode,
            )
            for r in member.routes
        ],
        available=member.available,
        quiet_hours=quiet,
        contact=Contact.model_validate(contact),
        share_with_group=list(member.share_with_group or ()),  # type: ignore[arg-type]
        snoozed_until=snoozed,
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


def to_summary(member: Member) -> MemberSummary:
    """The list view of a member: no geometry, no contact."""
    return MemberSummary(
        id=member.id,
        handle=member.handle,
        roles=list(member.roles),  # type: ignore[arg-type]
        mode=member.mode,  # type: ignore[arg-type]
        available=member.available,
        has_home_zone=member.home_zone is not None,
        created_at=member.created_at,
    )


def _encrypt_contact(settings: Settings, contact: Contact | None) -> bytes | None:
    if contact is None:
        return None
    data = contact.model_dump(mode="json", exclude_none=True)
    return contact_cipher(settings).encrypt(data) if data else None


# CHECK constraints of migration 0001 -> the field they guard (a backstop: the API checks first).
_CONSTRAINT_FIELDS = {
    "ck_member_home_zone_valid": "home_zone",
    "ck_member_zone_area_valid": "zones.area",
    "ck_member_route_path_valid": "routes.path",
}


def _flush(session: Session, handle: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        diag = getattr(exc.orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None) or ""
        if constraint == "uq_member_handle":
            msg = f"handle: {handle!r} is taken"
            raise HandleTaken(msg) from None
        if constraint in _CONSTRAINT_FIELDS:
            msg = f"{_CONSTRAINT_FIELDS[constraint]}: PostGIS finds the geometry invalid"
            raise InvalidGeometry(msg) from None
        if constraint.startswith("ck_"):
            msg = f"the member breaks the rule {constraint}"
            raise InvalidMember(msg) from None
        raise


# --- members ---------------------------------------------------------------------------------


def create_member(
    session: Session,
    settings: Settings,
    data: MemberCreate,
    *,
    actor: Member | None,
    graphs: GraphStore,
) -> tuple[Member, str]:
    """Store a new member and its first token; returns both (the token is not stored).

    Geometry the loaded ``graphs`` could never rank is refused (OutsideServiceArea, 422);
    an empty store (no graphs: straight-line ranking) accepts any place.
    """
    _check_geometry(settings, home_zone=data.home_zone, zones=data.zones, routes=data.routes)
    check_member_geometry(
        graphs,
        settings,
        mode=data.mode,
        placed=_placed(home_zone=data.home_zone, zones=data.zones, routes=data.routes),
    )
    if repository.handle_taken(session, data.handle):
        msg = f"handle: {data.handle!r} is taken"
        raise HandleTaken(msg)
    member = Member(
        id=uuid.uuid4(),
        handle=data.handle,
        roles=list(data.roles),
        mode=data.mode,
        speed_mps=data.speed_mps,
        home_zone=(from_shape(data.home_zone.to_shapely(), srid=4326) if data.home_zone else None),
        available=data.available,
        quiet_start=data.quiet_hours.start if data.quiet_hours else None,
        quiet_end=data.quiet_hours.end if data.quiet_hours else None,
        contact_ciphertext=_encrypt_contact(settings, data.contact),
        phone_index=phone_index(settings, data.contact.phone if data.contact else None),
        share_with_group=list(data.share_with_group),
        zones=[_zone_row(z) for z in data.zones],
        routes=[_route_row(r) for r in data.routes],
    )
    _check_home_zone_rule(member)
    session.add(member)
    _flush(session, member.handle)
    token = issue_token(session, member)
    audit(session, actor, member.id, "member.create")
    session.refresh(member)
    return member, token


def read_member(session: Session, member: Member, *, actor: Member) -> Member:
    """A member's record, audited when someone else reads it."""
    audit(session, actor, member.id, "member.read")
    return member


def update_member(
    session: Session,
    settings: Settings,
    member: Member,
    patch: MemberUpdate,
    *,
    actor: Member,
    graphs: GraphStore,
) -> Member:
    """Apply a partial change; coordinator-only fields are refused to others, nothing changed.

    Sent geometry the loaded ``graphs`` could never rank is refused (422); a change of mode
    checks the geometry the member keeps against the new mode's graph too.
    """
    sent = patch.model_fields_set
    forbidden = sorted(sent & COORDINATOR_ONLY_FIELDS) if not is_coordinator(actor) else []
    if forbidden:
        msg = f"{forbidden[0]}: only a coordinator may change {', '.join(forbidden)}"
        raise FieldNotAllowed(msg)
    _check_geometry(
        settings,
        home_zone=patch.home_zone if "home_zone" in sent else None,
        zones=patch.zones if "zones" in sent else None,
        routes=patch.routes if "routes" in sent else None,
    )
    new_mode = patch.mode if "mode" in sent and patch.mode is not None else member.mode
    placed = _placed(
        home_zone=patch.home_zone if "home_zone" in sent else None,
        zones=patch.zones if "zones" in sent else None,
        routes=patch.routes if "routes" in sent else None,
    )
    if new_mode != member.mode:
        placed += _stored_placed(member, skip=sent & {"home_zone", "zones", "routes"})
    check_member_geometry(graphs, settings, mode=new_mode, placed=placed)
    if "handle" in sent and patch.handle is not None and patch.handle != member.handle:
        if repository.handle_taken(session, patch.handle, besides=member.id):
            msg = f"handle: {patch.handle!r} is taken"
            raise HandleTaken(msg)
        member.handle = patch.handle
    # Replacing zones or routes loads the old list; an autoflush there would send a half-applied
    # member (e.g. a field role without home zone) to the database before the rule below: a 500.
    with session.no_autoflush:
        if "roles" in sent and patch.roles is not None:
            member.roles = list(patch.roles)
        if "mode" in sent and patch.mode is not None:
            member.mode = patch.mode
        if "speed_mps" in sent:
            member.speed_mps = patch.speed_mps
        if "home_zone" in sent:
            member.home_zone = (
                from_shape(patch.home_zone.to_shapely(), srid=4326) if patch.home_zone else None
            )
        if "available" in sent and patch.available is not None:
            member.available = patch.available
        if "quiet_hours" in sent:
            member.quiet_start = patch.quiet_hours.start if patch.quiet_hours else None
            member.quiet_end = patch.quiet_hours.end if patch.quiet_hours else None
        if "contact" in sent:
            member.contact_ciphertext = _encrypt_contact(settings, patch.contact)
            member.phone_index = phone_index(
                settings, patch.contact.phone if patch.contact else None
            )
        if "share_with_group" in sent and patch.share_with_group is not None:
            member.share_with_group = list(patch.share_with_group)
        if "zones" in sent and patch.zones is not None:
            member.zones = [_zone_row(z) for z in patch.zones]
        if "routes" in sent and patch.routes is not None:
            member.routes = [_route_row(r) for r in patch.routes]
        _check_home_zone_rule(member)
    repository.touch(member)
    _flush(session, member.handle)
    audit(session, actor, member.id, "member.update")
    session.refresh(member)
    return member


# What else goes with a member when it is erased: each (session, member_id) runs after the
# member row is locked and before it is deleted. Domains whose rows name a member without an
# ON DELETE CASCADE foreign key append here (group proposals name members inside JSON).
ERASURE_HOOKS: list[Callable[[Session, uuid.UUID], None]] = [groups_erasure.forget_member]


def delete_member(session: Session, member: Member, *, actor: Member) -> None:
    """Erase a member at once: zones, routes, live location, contact, tokens, deliveries go.

    Its alert rows go too, but their states stay without it (erased_response: counts) and
    its own alerts stay without naming it. Deleting oneself leaves an audit row saying only
    that an erasure happened; a coordinator's deletion is audited as before (who, whom).
    """
    from api.alerts.repository import keep_erased_counts

    subject_id = member.id
    # The member row first, as every deletion does (see api.alerts.repository.lock_members).
    repository.lock_member(session, subject_id)
    keep_erased_counts(session, subject_id)
    for hook in ERASURE_HOOKS:
        hook(session, subject_id)
    repository.delete_member(session, member)
    if actor.id == subject_id:
        repository.add_audit(session, actor_id=None, subject_id=None, action="member.erase")
    else:
        audit(session, actor, subject_id, "member.delete")


def list_members(session: Session, *, actor: Member, limit: int, offset: int) -> MemberPage:
    """One page of member summaries (audited as one list read)."""
    page, total = repository.list_members(session, limit=limit, offset=offset)
    audit(session, actor, None, "member.list")
    return MemberPage(items=[to_summary(m) for m in page], total=total, limit=limit, offset=offset)


# --- tokens ----------------------------------------------------------------------------------


def issue_token(session: Session, member: Member) -> str:
    """A new token for the member; only its hash is stored."""
    token = new_token()
    repository.add_token(session, member.id, hash_token(token))
    return token


def rotate_token(
    session: Session,
    member: Member,
    *,
    actor: Member | None,
    now: datetime,
    token_id: uuid.UUID | None = None,
) -> str:
    """Revoke the member's token ``token_id`` (None: all its tokens) and issue a new one."""
    repository.revoke_tokens(session, member.id, at=now, token_id=token_id)
    token = issue_token(session, member)
    audit(session, actor, member.id, "token.rotate")
    return token


def revoke_tokens(
    session: Session,
    member: Member,
    *,
    actor: Member | None,
    now: datetime,
    token_id: uuid.UUID | None = None,
) -> int:
    """Revoke the member's token ``token_id`` (None: all its tokens); returns how many."""
    count = repository.revoke_tokens(session, member.id, at=now, token_id=token_id)
    audit(session, actor, member.id, "token.revoke")
    return count


# --- the admin CLI ---------------------------------------------------------------------------


def create_coordinator(session: Session, settings: Settings, *, handle: str) -> tuple[Member, str]:
    """A coordinator-only account (no home zone) and its first token."""
    data = MemberCreate(handle=handle, roles=["coordinator"])
    return create_member(session, settings, data, actor=None, graphs=GraphStore())


def member_by_handle(session: Session, handle: str) -> Member:
    """The member with this handle, or MemberNotFound."""
    member = repository.get_member_by_handle(session, handle)
    if member is None:
        msg = f"no member with handle {handle!r}"
        raise MemberNotFound(msg)
    return member
