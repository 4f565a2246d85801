"""Buddy groups: build a proposal with geo.buddies, publish it, read groups and rosters, move."""

from __future__ import annotations

import csv
import io
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from sqlalchemy.orm import Session

from api.graphs import GraphStore
from api.groups import repository as repo
from api.groups.errors import (
    GroupFull,
    GroupNotFound,
    GroupRetired,
    HistoryForbidden,
    ModeMismatch,
    ModeUnavailable,
    ProposalNotFound,
    ProposalPublished,
)
from api.groups.models import BuddyGroup, GroupProposal
from api.groups.schemas import (
    BuildRequest,
    GroupList,
    GroupRead,
    MemberRef,
    Proposal,
    ProposalQuality,
    ProposedGroup,
    Roster,
    RosterEntry,
    UnmatchedRoute,
)
from api.members.auth import is_coordinator
from api.members.crypto import contact_cipher
from api.members.errors import ContactUnreadable, MemberNotFound
from api.members.models import Member
from api.members.service import audit
from api.notify.service import enqueue_each
from api.settings import Settings
from geo import buddies
from geo.errors import GraphUnavailable
from geo.presence import days_mask

log = logging.getLogger("ern.groups")

DEFENCE_ROLE = "defense"
ROSTER_COLUMNS = ("handle", "email", "phone")


def _seconds(t: Any) -> int:
    return int(t.hour) * 3600 + int(t.minute) * 60 + int(t.second)


def _r(value: float) -> float:
    # Minutes and seconds to the hundredth: enough to compare, no false precision.
    return round(float(value), 2)


# --- build -----------------------------------------------------------------------------------


def build(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    body: BuildRequest,
    coordinator: Member,
    now: datetime,
    timer: Callable[[], float] = time.perf_counter,
) -> Proposal:
    """Propose groups of ``body.mode`` from members' routes and home zones; store the proposal.

    Nothing else changes: the published groups stay as they are until the proposal is published.
    """
    try:
        mode_graph = graphs.get(body.mode)
    except GraphUnavailable as exc:
        msg = f"mode: {exc}"
        raise ModeUnavailable(msg) from None
    started = timer()
    people = repo.population(session, body.mode)
    ids = [row[0] for row in people]
    index = {member_id: i for i, member_id in enumerate(ids)}
    routes = repo.route_rows(session, body.mode)
    keep: list[list[int]] = []
    if body.keep:
        current = repo.groups(session, mode=body.mode)
        for members in repo.member_ids_of(session, [g.id for g in current]).values():
            kept = sorted(index[m] for m, _ in members if m in index)
            if len(kept) >= 2:
                keep.append(kept)
    timings = {"load_s": timer() - started}
    if ids:
        result = buddies.propose(
            mode_graph.graph,
            mode_graph.snapper,
            n_members=len(ids),
            route_member=np.array([index[r[1]] for r in routes], dtype=np.int64),
            route_lines=list(shapely.from_wkb([bytes(r[2]) for r in routes])) if routes else [],
            route_days=np.array([days_mask(r[3]) for r in routes], dtype=np.int64),
            route_start_s=np.array([_seconds(r[4]) for r in routes], dtype=np.float64),
            route_end_s=np.array([_seconds(r[5]) for r in routes], dtype=np.float64),
            home_lon=np.array([np.nan if r[2] is None else r[2] for r in people], dtype=float),
            home_lat=np.array([np.nan if r[3] is None else r[3] for r in people], dtype=float),
            defence=np.array(
                [i for i, r in enumerate(people) if DEFENCE_ROLE in (r[1] or ())], dtype=np.int64
            ),
            max_size=body.max_size,
            min_size=body.min_size,
            keep=keep,
            max_groups_per_contact=settings.max_groups_per_contact,
            contact_max_eta_s=settings.contact_max_eta_s,
            clock=timer,
        )
        timings.update(result.timings_s)
        proposal = _proposal_body(result, ids, routes, body, now)
    else:
        proposal = _empty_proposal(body, now)
    proposal.timings_s = {k: round(v, 4) for k, v in timings.items()}
    repo.add_proposal(
        session,
        GroupProposal(
            id=proposal.proposal_id,
            created_by=coordinator.id,
            mode=body.mode,
            params=body.model_dump(mode="json"),
            answer=proposal.model_dump(mode="json"),
            created_at=now,
        ),
    )
    return proposal


def _proposal_body(
    result: buddies.Proposal,
    ids: Sequence[uuid.UUID],
    routes: Sequence[Any],
    body: BuildRequest,
    now: datetime,
) -> Proposal:
    q = result.quality
    return Proposal(
        proposal_id=uuid.uuid4(),
        groups=[
            ProposedGroup(
                members=[ids[m] for m in members],
                point_contact=None if contact is None else ids[contact],
                shared_minutes=_r(minutes),
            )
            for members, contact, minutes in zip(
                result.groups, result.point_contact, result.shared_minutes, strict=True
            )
        ],
        unplaced=[ids[m] for m in result.unplaced],
        quality=ProposalQuality(
            mean_shared_minutes=_r(q.mean_shared_minutes),
            random_baseline=_r(q.random_baseline),
            locality_baseline=_r(q.locality_baseline),
            placed_share=round(q.placed_share, 4),
            size_histogram=q.size_histogram,
        ),
        mode=body.mode,
        max_size=body.max_size,
        min_size=body.min_size,
        keep=body.keep,
        contact_eta_s=[None if e is None else _r(e) for e in result.contact_eta_s],
        no_contact=result.no_contact,
        unmatched=[
            UnmatchedRoute(member_id=routes[r][1], route_id=routes[r][0], reason=why)
            for r, why in sorted(result.unmatched.items())
        ],
        timings_s={},
        created_at=now,
    )


def _empty_proposal(body: BuildRequest, now: datetime) -> Proposal:
    return Proposal(
        proposal_id=uuid.uuid4(),
        groups=[],
        unplaced=[],
        quality=ProposalQuality(
            mean_shared_minutes=0.0,
            random_baseline=0.0,
            locality_baseline=0.0,
            placed_share=0.0,
            size_histogram={},
        ),
        mode=body.mode,
        max_size=body.max_size,
        min_size=body.min_size,
        keep=body.keep,
        contact_eta_s=[],
        no_contact=[],
        unmatched=[],
        timings_s={},
        created_at=now,
    )


# --- publish ---------------------------------------------------------------------------------


def publish(
    session: Session,
    settings: Settings,
    *,
    proposal_id: uuid.UUID,
    coordinator: Member,
    now: datetime,
) -> GroupList:
    """Make the proposal's groups current and retire the previous ones, in one transaction.

    The previous ones are the current groups of the proposal's mode; a member published here
    also leaves a current group of another mode, so that each is in one current group.

    Members erased since the build, or now of another mode, are left out (a group left with
    fewer than two is dropped); a point contact that lost the defence role becomes none.
    Each member of each new group is told, through the outbox, who is in it (handles only).
    """
    repo.lock_groups(session)
    # The members before the proposal, as an erasure takes them (its member row, then the
    # proposals naming it, to scrub): holding the proposal while waiting for a member being
    # erased deadlocked. The proposal is read again once locked: an erasure may have scrubbed
    # it meanwhile, and then names fewer members than those locked.
    msg = f"no proposal {proposal_id}"
    proposal = repo.get_proposal(session, proposal_id, lock=False)
    if proposal is None:
        raise ProposalNotFound(msg)
    present = repo.lock_members(session, _named(Proposal.model_validate(proposal.answer)))
    proposal = repo.get_proposal(session, proposal_id)
    if proposal is None:  # purged meanwhile
        raise ProposalNotFound(msg)
    if proposal.published_at is not None:
        msg = f"proposal {proposal_id} was published at {proposal.published_at.isoformat()}"
        raise ProposalPublished(msg)
    planned = Proposal.model_validate(proposal.answer)
    repo.retire_current(session, mode=proposal.mode, now=now)
    made: list[tuple[BuddyGroup, list[uuid.UUID]]] = []
    for position, planned_group in enumerate(planned.groups):
        members = [
            m for m in planned_group.members if m in present and present[m].mode == proposal.mode
        ]
        if len(members) < 2:
            continue
        contact = planned_group.point_contact
        if contact is not None and (
            contact not in present or DEFENCE_ROLE not in (present[contact].roles or ())
        ):
            contact = None
        group = BuddyGroup(
            id=uuid.uuid4(),
            proposal_id=proposal.id,
            position=position,
            mode=proposal.mode,
            point_contact_id=contact,
            shared_minutes=planned_group.shared_minutes,
            published_at=now,
            retired_at=None,
        )
        made.append((group, members))
    # One current group per member: those published here leave any current group of another
    # mode (a member who changed mode since its last group); this mode's were retired above.
    repo.leave_current(session, [m for _, ms in made for m in ms])
    repo.add_groups(session, made)
    proposal.published_at = now
    session.flush()
    handle = {m: row.handle for m, row in present.items()}
    _tell_members(session, settings, made, handle, now=now)
    audit(session, coordinator, None, "group.publish")
    return GroupList(
        items=[
            _read(g, sorted(((m, handle[m]) for m in ms), key=lambda p: p[1]), handle)
            for g, ms in made
        ]
    )


def _named(planned: Proposal) -> set[uuid.UUID]:
    """The members a proposal's groups name, point contacts too."""
    named = {m for g in planned.groups for m in g.members}
    return named | {g.point_contact for g in planned.groups if g.point_contact is not None}


def group_text(others: Sequence[str], contact: str | None) -> str:
    """What a member of a new group is told: handles only, never places."""
    text = f"ern: you are now in a group with {', '.join(others)}"
    if contact is None:
        return text + " ; no point contact could be found for your group yet"
    return f"{text} ; your point contact is {contact}"


def _tell_members(
    session: Session,
    settings: Settings,
    made: Sequence[tuple[BuddyGroup, list[uuid.UUID]]],
    handle: dict[uuid.UUID, str],
    *,
    now: datetime,
) -> None:
    contacts = [g.point_contact_id for g, _ in made if g.point_contact_id is not None]
    records = repo.members_by_id(session, [m for _, ms in made for m in ms] + contacts)
    # One outbox row per member and channel; the group's id makes each delivery id unique.
    # Every group's in one INSERT (one per group was thousands of round trips under the lock).
    messages: list[tuple[uuid.UUID, Member, str, dict[str, Any]]] = []
    for group, members in made:
        contact = None if group.point_contact_id is None else handle[group.point_contact_id]
        for m in members:
            others = sorted(handle[o] for o in members if o != m)
            payload = {
                "subject": "ern: your buddy group",
                "text": group_text(others, contact),
                "group": {
                    "group_id": str(group.id),
                    "members": others,
                    "point_contact": contact,
                },
            }
            messages.append((group.id, records[m], "group", payload))
        if group.point_contact_id is not None:
            # The point contact learns whom it serves (it may be in the group itself, too).
            handles = sorted(handle[m] for m in members)
            payload = {
                "subject": "ern: you are a buddy group's point contact",
                "text": f"ern: you are now the point contact of a group with {', '.join(handles)}",
                "group": {"group_id": str(group.id), "members": handles, "point_contact": contact},
            }
            messages.append((group.id, records[group.point_contact_id], "group_contact", payload))
    enqueue_each(session, settings, messages=messages, now=now)


# --- reads -----------------------------------------------------------------------------------


def _read(
    group: BuddyGroup, members: Sequence[tuple[uuid.UUID, str]], handle: dict[uuid.UUID, str]
) -> GroupRead:
    contact = group.point_contact_id
    ref = (
        None
        if contact is None or contact not in handle
        else MemberRef(id=contact, handle=handle[contact])
    )
    return GroupRead(
        id=group.id,
        members=[MemberRef(id=m, handle=h) for m, h in members],
        point_contact=ref,
        shared_minutes=group.shared_minutes,
        mode=group.mode,  # type: ignore[arg-type]
        published_at=group.published_at,
        retired_at=group.retired_at,
    )


def _reads(session: Session, groups: Sequence[BuddyGroup]) -> list[GroupRead]:
    members = repo.member_ids_of(session, [g.id for g in groups])
    contacts = [g.point_contact_id for g in groups if g.point_contact_id is not None]
    handle = repo.handles(session, contacts)
    return [_read(g, members[g.id], handle) for g in groups]


def list_groups(session: Session, *, caller: Member, history: bool) -> GroupList:
    """A coordinator: every current group (``history``: retired ones too). A member: its own."""
    if not is_coordinator(caller):
        if history:
            msg = "history: only coordinators list retired groups"
            raise HistoryForbidden(msg)
        return GroupList(items=_reads(session, repo.groups(session, of_member=caller.id)))
    return GroupList(items=_reads(session, repo.groups(session, history=history)))


def visible_group(session: Session, caller: Member, group_id: uuid.UUID) -> BuddyGroup:
    """The group if the caller may see it; else 404 (a group one is not in is not told of).

    Coordinators see every group, history too; members and the point contact of a current
    group see that group.
    """
    group = repo.get_group(session, group_id)
    if group is not None and not is_coordinator(caller):
        allowed = group.retired_at is None and (
            group.point_contact_id == caller.id
            or any(m == caller.id for m, _ in repo.member_ids_of(session, [group.id])[group.id])
        )
        if not allowed:
            group = None
    if group is None:
        msg = f"no group {group_id}"
        raise GroupNotFound(msg)
    return group


def read_group(session: Session, group: BuddyGroup) -> GroupRead:
    """One group."""
    return _reads(session, [group])[0]


def roster(session: Session, settings: Settings, group: BuddyGroup, *, caller: Member) -> Roster:
    """Handles, and of each member only the channels it listed in ``share_with_group``."""
    members = repo.member_ids_of(session, [group.id])[group.id]
    ids = [m for m, _ in members]
    if group.point_contact_id is not None:
        ids.append(group.point_contact_id)
    cipher = contact_cipher(settings)
    entries: dict[uuid.UUID, RosterEntry] = {}
    for member_id, handle, shared, ciphertext in repo.roster_rows(session, ids):
        entry = RosterEntry(handle=handle)
        if shared:
            try:
                contact = cipher.decrypt(ciphertext)
            except ContactUnreadable:
                log.error("member %s: contact details unreadable, left off the roster", member_id)
                contact = {}
            entry.email = contact.get("email") if "email" in shared else None
            entry.phone = contact.get("phone") if "phone" in shared else None
        entries[member_id] = entry
    audit(session, caller, None, "group.roster")
    contact_id = group.point_contact_id
    return Roster(
        group_id=group.id,
        items=[entries[m] for m, _ in members if m in entries],
        point_contact=entries.get(contact_id) if contact_id is not None else None,
    )


def _cell(value: str | None) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula; an E.164 phone is a number.
    if not value:
        return ""
    if value[0] in "=+-@" and not (value[0] == "+" and value[1:].isdigit()):
        return "'" + value
    return value


def roster_csv(data: Roster) -> str:
    """The roster's members as CSV: handle,email,phone (empty where not shared)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(ROSTER_COLUMNS)
    for entry in data.items:
        writer.writerow([_cell(entry.handle), _cell(entry.email), _cell(entry.phone)])
    return out.getvalue()


# --- manual edits ----------------------------------------------------------------------------


def move_member(
    session: Session,
    *,
    group_id: uuid.UUID,
    member_id: uuid.UUID,
    coordinator: Member,
) -> GroupRead:
    """Move a member into a current group (out of the one it is in), within the size cap."""
    repo.lock_groups(session)
    # The member before the group, as an erasure takes them (its member row, then the group it
    # is the point contact of): the other order deadlocked.
    member = repo.lock_members(session, [member_id]).get(member_id)
    group = repo.get_group(session, group_id, lock=True)
    if group is None:
        msg = f"no group {group_id}"
        raise GroupNotFound(msg)
    if member is None:
        msg = f"member_id: no member {member_id}"
        raise MemberNotFound(msg)
    if group.retired_at is not None:
        msg = f"group_id: group {group_id} was retired at {group.retired_at.isoformat()}"
        raise GroupRetired(msg)
    if member.mode != group.mode:
        msg = f"member_id: the member travels by {member.mode}, the group by {group.mode}"
        raise ModeMismatch(msg)
    members = [m for m, _ in repo.member_ids_of(session, [group.id])[group.id]]
    if member_id not in members:
        if len(members) >= buddies.HARD_MAX_SIZE:
            msg = f"group {group_id} already has {len(members)} members, the most a group may have"
            raise GroupFull(msg)
        repo.leave_current(session, [member_id])
        repo.add_memberships(session, group.id, [member_id])
        audit(session, coordinator, member_id, "group.move")
    return read_group(session, group)
