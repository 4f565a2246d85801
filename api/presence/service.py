"""Presence and alert ranking: who can be at a location soonest at a time, from a per-process cache.

Design (keeps PostGIS and geometry work off the alert path):

- ``PresenceIndex`` holds, per travel mode, every available member's candidate anchors
  already snapped to that mode's graph (home zone and scheduled zones: one representative
  node each; routes: every node within ``max_snap_m`` of the route sampled every 20 m),
  with their weekly windows, plus per-member roles, quiet hours and speed factors. It is
  built from one snapshot of ``member``/``member_zone``/``member_route`` and labelled with
  ``presence_version.token``, a random token that a statement-level trigger (migration
  0003) replaces on every write to those tables. Each alert reads the token first (one
  primary-key lookup) and rebuilds the index only when it changed, so every process sees
  every change, whichever process or tool made it. ``invalidate_presence()`` drops the
  cache explicitly.
- Per alert, the local time (``settings.timezone``) picks the *segment* of the week
  between two window boundaries; the active anchors of a segment (best kind per member:
  route > zone > home, quiet members and members without the wanted roles left out) are
  turned into an :class:`geo.route.AnchorIndex` once and cached per
  ``(mode, segment, roles)``, so a steady stream of alerts does no per-alert NumPy work
  over all anchors; the next segment's index is prefetched in a background thread.
- Live locations change too often for the cache; they are read per alert (an indexed
  query returning the few fresh ones), snapped, and ranked with a second small anchor
  index; their members are skipped in the cached index (``k + skipped`` asked for).
  The requester and other excluded ids are skipped the same way.
- ETA = ``mobilization_s`` + travel time on the member's mode graph from the anchor to the
  alert's node x ``factor`` + the final approach from that node to the alert point on foot
  (snap distance / walk speed, the same for every member of a mode) + for live anchors the
  walk from the member's point to its snapped node (snap distance / walk speed). Zone,
  home and route anchors have no offset: a zone says "somewhere around here", not a point.
- ``factor`` = mode speed / member ``speed_mps`` for walk and bike (clipped to 0.25-4);
  drive ignores member speeds (the graph's speeds follow speed limits).
- Routes are snapped to the graph of the member's own mode (how they would come to an
  alert), whatever ``member_route.mode`` says about how the route itself is travelled.
- A live location farther than ``max_snap_m`` from the member's mode graph places the
  member out of reach (not back at home: the live location is the freshest knowledge);
  likewise a zone whose representative node is farther than that gives no anchor.
- Rebuilds reuse the snapped anchors of unchanged geometries (keyed by WKB), so an edit
  costs one read of the members' rows plus concatenation (about 0.3 s for 10,000
  synthetic members on Porto), not a re-snap of everything (about 10 s).
- A mode without a graph ranks its members by straight line (haversine distance at the
  mode's speed; drive at 30 km/h) from the same anchors' coordinates, and the whole
  ranking then says ``"straight_line"``.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import shapely
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from api.graphs import GraphStore, ModeGraph
from api.members.crypto import contact_cipher
from api.notify.service import member_channels
from api.presence import repository as repo
from api.presence.errors import SnoozeOutOfRange
from api.presence.schemas import LocationRead, SnoozeRead
from api.settings import Settings
from api.types import Point
from geo import presence as gp
from geo.errors import GraphUnavailable
from geo.rank import merge_rankings, rank_on_graph, rank_straight_line, speed_factor
from geo.route import AnchorIndex

log = logging.getLogger("ern.presence")

# (weekday, seconds after midnight) -> members passing roles and quiet hours then.
MemberFilter = Callable[[int, float], NDArray[np.bool_]]
MODES = ("walk", "bike", "drive")
ROLE_BITS = {"responder": 1, "defense": 2, "coordinator": 4}
# Straight-line fallback speed for drivers: an urban average including stops (30 km/h).
STRAIGHT_LINE_DRIVE_MPS = 30.0 / 3.6
# Cached anchor indexes per mode: (segment, roles) pairs kept, least recently used dropped.
# An index holds every active anchor (~25 MB for Porto's drive commuters at 08:30), so a
# few: the current and recent segments for the three role sets alerts use.
SEGMENTS_KEPT = 12


@dataclass(frozen=True)
class Candidate:
    """A member who could respond, with the ETA (mobilisation included)."""

    member_id: uuid.UUID
    handle: str
    roles: frozenset[str]
    mode: str
    eta_s: float
    # The notification channels the member's contact has; None when the index was built
    # without contacts (the caller reads them from the member's record).
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Ranking:
    """Candidates best first, and how their ETAs were computed."""

    candidates: list[Candidate]
    method: Literal["street_network", "straight_line"]


def check_in_service_area(
    graphs: GraphStore, settings: Settings, *, lon: float, lat: float
) -> None:
    """OutsideServiceArea beyond max_snap_m of the walk (else first) graph; no graph: accept."""
    mode_graph = _service_area_graph(graphs)
    if mode_graph is None:
        # No graph at all: ranking falls back to straight lines, which work anywhere.
        return
    mode_graph.snapper.snap(lon, lat, max_snap_m=settings.max_snap_m)


def rank_members(
    session: Session,
    graphs: GraphStore,
    settings: Settings,
    *,
    lon: float,
    lat: float,
    at: datetime,
    roles: frozenset[str] | None,
    exclude: frozenset[uuid.UUID],
    limit: int | None,
    max_eta_s: float,
    include_busy: bool = False,
) -> Ranking:
    """Members soonest at (lon, lat) at ``at``, best first; ``limit`` None: all within max_eta_s.

    Snoozed members are never ranked; busy ones (accepted an alert that is still open) only
    with ``include_busy`` (a coordinator's mass alert).
    """
    if limit is not None and limit < 1:
        return Ranking(candidates=[], method=_method(graphs))
    token, live = repo.token_and_live_locations(session, at=at)
    index = presence_index(session, graphs, settings, token=token)
    if not include_busy:
        exclude = exclude | repo.busy_member_ids(session)
    return index.rank(
        lon=lon,
        lat=lat,
        at=at,
        roles=roles,
        exclude=exclude,
        limit=limit,
        max_eta_s=max_eta_s,
        live=live,
    )


_UNREAD = object()


def away_member_ids(session: Session, *, at: datetime) -> set[uuid.UUID]:
    """Members not to notify at ``at``: snoozed then, or busy with an alert still open."""
    return repo.busy_member_ids(session) | repo.snoozed_member_ids(session, at=at)


def invalidate_presence() -> None:
    """Drop every cached presence index of this process (the next alert rebuilds it)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def presence_index(
    session: Session, graphs: GraphStore, settings: Settings, *, token: Any = _UNREAD
) -> PresenceIndex:
    """The cached index for these graphs, rebuilt when the database's presence token changed.

    ``token``: the presence token if the caller has just read it (saves a round trip).
    """
    # The token is read before the rows: a change committed in between makes the next
    # alert rebuild again, never keeps stale rows under a new token.
    if token is _UNREAD:
        token = repo.presence_token(session)
    # Everything the index bakes in; apps sharing graphs with other settings get their own.
    key = (
        token,
        settings.max_snap_m,
        settings.walk_speed_mps,
        settings.bike_speed_mps,
        settings.mobilization_s,
        settings.timezone,
    )
    cached = _cached(graphs, key)
    if cached is not None:
        return cached
    with _BUILD_LOCK:
        cached = _cached(graphs, key)
        if cached is not None:
            return cached
        with _CACHE_LOCK:
            entry = _CACHE.get(id(graphs))
        previous = None
        if entry is not None and entry[0]() is graphs and entry[1].key[1:] == key[1:]:
            previous = entry[1]
        index = PresenceIndex.build(
            graphs,
            settings,
            key=key,
            members=repo.member_rows(session),
            zones=repo.zone_rows(session),
            routes=repo.route_rows(session),
            previous=previous,
        )
        if token is not None:
            with _CACHE_LOCK:
                _CACHE[id(graphs)] = (weakref.ref(graphs), index)
        return index


_CACHE: dict[int, tuple[weakref.ref[GraphStore], PresenceIndex]] = {}
_CACHE_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()


def _cached(graphs: GraphStore, key: tuple[Any, ...]) -> PresenceIndex | None:
    with _CACHE_LOCK:
        entry = _CACHE.get(id(graphs))
    if entry is None or entry[0]() is not graphs or entry[1].key != key:
        return None
    return entry[1]


def _method(graphs: GraphStore) -> Literal["street_network", "straight_line"]:
    missing = any(mode not in graphs.by_mode for mode in MODES)
    return "straight_line" if missing else "street_network"


def _service_area_graph(graphs: GraphStore) -> ModeGraph | None:
    try:
        return graphs.get("walk")
    except GraphUnavailable:
        return next(iter(graphs.by_mode.values()), None)


def _seconds(value: time | None) -> float:
    if value is None:
        return math.nan
    return float(value.hour * 3600 + value.minute * 60 + value.second)


def _posix(value: datetime | None) -> float:
    return math.nan if value is None else value.timestamp()


def _roles_mask(roles: Sequence[str] | frozenset[str]) -> int:
    mask = 0
    for role in roles:
        mask |= ROLE_BITS.get(role, 0)
    return mask


def mode_speed_mps(settings: Settings, mode: str) -> float:
    """Speed the graph of ``mode`` assumes (walk, bike), or the straight-line drive speed."""
    if mode == "walk":
        return settings.walk_speed_mps
    if mode == "bike":
        return settings.bike_speed_mps
    return STRAIGHT_LINE_DRIVE_MPS


@dataclass(eq=False)
class ModePresence:
    """Anchors of one mode's members, the mode's graph (None: straight line), cached indexes."""

    mode: str
    table: gp.AnchorTable
    boundaries: NDArray[np.int64]
    graph: ModeGraph | None
    n_members: int
    _indexes: OrderedDict[tuple[int, int], AnchorIndex] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: set[tuple[int, int]] = field(default_factory=set)

    def active(
        self, *, weekday: int, second: float, member_ok: NDArray[np.bool_]
    ) -> NDArray[np.int64]:
        """Indices of the table's active anchors at a local time for eligible members."""
        return self.table.select(weekday=weekday, second=second, member_ok=member_ok)

    def anchor_index(
        self,
        *,
        weekday: int,
        second: float,
        roles_mask: int,
        member_ok: MemberFilter,
        factor: NDArray[np.float64],
        prefetch: bool = True,
    ) -> AnchorIndex:
        """The AnchorIndex of the active anchors, cached per week segment and roles.

        With ``prefetch``, the next segment's index is built in a background thread, so
        that the alert arriving after the next window boundary finds it ready.
        """
        segment = gp.week_segment(self.boundaries, weekday, second)
        key = (segment, roles_mask)
        with self._lock:
            found = self._indexes.get(key)
            if found is not None:
                self._indexes.move_to_end(key)
        if found is None:
            found = self._build(key, weekday, second, member_ok, factor)
        if prefetch and self.boundaries.size:
            self._prefetch_next(segment, roles_mask, member_ok, factor)
        return found

    def _build(
        self,
        key: tuple[int, int],
        weekday: int,
        second: float,
        member_ok: MemberFilter,
        factor: NDArray[np.float64],
    ) -> AnchorIndex:
        assert self.graph is not None
        idx = self.active(weekday=weekday, second=second, member_ok=member_ok(weekday, second))
        members = self.table.member[idx]
        built = AnchorIndex.build(
            self.graph.graph.n_nodes, members, self.table.node[idx], None, factor[members]
        )
        with self._lock:
            self._indexes[key] = built
            self._indexes.move_to_end(key)
            while len(self._indexes) > SEGMENTS_KEPT:
                self._indexes.popitem(last=False)
        return built

    def _prefetch_next(
        self, segment: int, roles_mask: int, member_ok: MemberFilter, factor: NDArray[np.float64]
    ) -> None:
        bounds = self.boundaries
        start = int(bounds[segment] if segment < bounds.size else bounds[0])
        weekday, second = start // gp.DAY_S, float(start % gp.DAY_S)
        key = (gp.week_segment(bounds, weekday, second), roles_mask)
        with self._lock:
            if key in self._indexes or key in self._pending:
                return
            self._pending.add(key)

        def run() -> None:
            try:
                self._build(key, weekday, second, member_ok, factor)
            except Exception:  # a failed prefetch only means the next alert builds it
                log.exception("prefetching the presence of segment %s failed", key)
            finally:
                with self._lock:
                    self._pending.discard(key)

        threading.Thread(target=run, name=f"presence-prefetch-{self.mode}", daemon=True).start()


@dataclass(eq=False)
class PresenceIndex:
    """Every available member's anchors per mode, ready for ranking at any time."""

    key: tuple[Any, ...]
    ids: list[uuid.UUID]
    handles: list[str]
    roles: list[frozenset[str]]
    roles_mask: NDArray[np.int64]
    mode: NDArray[np.int8]
    factor: NDArray[np.float64]
    quiet_start_s: NDArray[np.float64]
    quiet_end_s: NDArray[np.float64]
    number: dict[uuid.UUID, int]
    modes: dict[str, ModePresence]
    timezone: ZoneInfo
    mobilization_s: float
    walk_speed_mps: float
    max_snap_m: float
    speeds_mps: dict[str, float]
    channels: list[tuple[str, ...] | None] = field(default_factory=list)
    channel_memo: dict[bytes, tuple[str, ...]] = field(default_factory=dict)
    memos: dict[str, _SnapMemo] = field(default_factory=dict)
    # End of each member's snooze, POSIX seconds (NaN: not snoozed).
    snoozed_until_s: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def n_members(self) -> int:
        """Number of members indexed."""
        return len(self.ids)

    def member_filter(self, roles_mask: int, weekday: int, second: float) -> NDArray[np.bool_]:
        """Members holding a wanted role (-1: any) and not in quiet hours at a local time."""
        if roles_mask == -1:
            role_ok = np.ones(self.n_members, dtype=bool)
        else:
            role_ok = (self.roles_mask & roles_mask) != 0
        quiet = gp.quiet_members(
            self.quiet_start_s, self.quiet_end_s, weekday=weekday, second=second
        )
        out: NDArray[np.bool_] = role_ok & ~quiet
        return out

    def snoozed(self, at: datetime) -> NDArray[np.bool_]:
        """Members snoozed at ``at``: a snooze covers times before its end, then ends by itself.

        The question coverage and rallies ask too ("is member X snoozed at t": look up
        ``number[X]`` in this mask); ranking leaves these members out at any time of day.
        """
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if self.snoozed_until_s.size != self.n_members:
            return np.zeros(self.n_members, dtype=bool)
        with np.errstate(invalid="ignore"):
            out: NDArray[np.bool_] = self.snoozed_until_s > at.timestamp()
        return out

    @classmethod
    def build(
        cls,
        graphs: GraphStore,
        settings: Settings,
        *,
        key: tuple[Any, ...],
        members: Sequence[Any],
        zones: Sequence[Any],
        routes: Sequence[Any],
        previous: PresenceIndex | None = None,
    ) -> PresenceIndex:
        """Snap every member's home zone, zones and routes to their mode's graph, once.

        Geometries already snapped by ``previous`` (same graphs and max_snap_m) are reused.
        """
        memos: dict[str, _SnapMemo] = dict(previous.memos) if previous is not None else {}
        n = len(members)
        ids = [row[0] for row in members]
        number = {member_id: i for i, member_id in enumerate(ids)}
        mode = np.array([MODES.index(row[3]) for row in members], dtype=np.int8)
        speed = np.array([math.nan if row[4] is None else row[4] for row in members], dtype=float)
        factor = np.ones(n)
        for code, name in enumerate(MODES[:2]):
            sel = mode == code
            factor[sel] = speed_factor(mode_speed_mps(settings, name), speed[sel])
        home = [None if row[7] is None else bytes(row[7]) for row in members]
        zone_rows = _Schedules.parse(zones, number)
        route_rows = _Schedules.parse(routes, number)
        quiet_start = np.array([_seconds(row[5]) for row in members])
        quiet_end = np.array([_seconds(row[6]) for row in members])
        snoozed_until = np.array(
            [_posix(row[9]) if len(row) > 9 else math.nan for row in members], dtype=float
        )
        channel_memo = dict(previous.channel_memo) if previous is not None else {}
        channels = _member_channels(settings, members, channel_memo)
        modes: dict[str, ModePresence] = {}
        for code, name in enumerate(MODES):
            mode_graph = graphs.by_mode.get(name)
            in_mode = mode == code
            memo = memos.get(name) or _SnapMemo()
            table = _mode_table(
                in_mode,
                home,
                zone_rows,
                route_rows,
                mode_graph,
                max_snap_m=settings.max_snap_m,
                memo=memo,
            )
            memo.keep_only(
                {w for w in home if w is not None} | set(zone_rows.wkb), set(route_rows.wkb)
            )
            memos[name] = memo
            bounds = np.union1d(
                table.boundaries(),
                gp.quiet_boundaries(quiet_start[in_mode], quiet_end[in_mode]),
            )
            modes[name] = ModePresence(
                mode=name,
                table=table,
                boundaries=bounds,
                graph=mode_graph,
                n_members=int(in_mode.sum()),
            )
        return cls(
            key=key,
            ids=ids,
            handles=[row[1] for row in members],
            roles=[frozenset(row[2] or ()) for row in members],
            roles_mask=np.array([_roles_mask(row[2] or ()) for row in members], dtype=np.int64),
            mode=mode,
            factor=factor,
            quiet_start_s=quiet_start,
            quiet_end_s=quiet_end,
            number=number,
            modes=modes,
            timezone=ZoneInfo(settings.timezone),
            mobilization_s=settings.mobilization_s,
            walk_speed_mps=settings.walk_speed_mps,
            max_snap_m=settings.max_snap_m,
            speeds_mps={m: mode_speed_mps(settings, m) for m in MODES},
            channels=channels,
            channel_memo=channel_memo,
            memos=memos,
            snoozed_until_s=snoozed_until,
        )

    def rank(
        self,
        *,
        lon: float,
        lat: float,
        at: datetime,
        roles: frozenset[str] | None,
        exclude: frozenset[uuid.UUID],
        limit: int | None,
        max_eta_s: float,
        live: Sequence[tuple[uuid.UUID, float, float]] = (),
    ) -> Ranking:
        """Rank members at a time: one bounded search per mode (plus one for live locations)."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        local = at.astimezone(self.timezone)
        weekday = local.weekday()
        second = float(local.hour * 3600 + local.minute * 60 + local.second)
        # -1: no role filter (a key of its own: members without any role are ranked too)
        want = -1 if roles is None else _roles_mask(roles)
        excluded = np.array([self.number[m] for m in exclude if m in self.number], dtype=np.int64)
        # Snoozed members are skipped like excluded ones (few: cheaper than re-filtering anchors).
        excluded = np.union1d(excluded, np.flatnonzero(self.snoozed(at))).astype(np.int64)
        live_num = np.array([self.number.get(m, -1) for m, _, _ in live], dtype=np.int64)
        live_lon = np.array([x for _, x, _ in live], dtype=float)
        live_lat = np.array([y for _, _, y in live], dtype=float)
        known = live_num >= 0
        live_num, live_lon, live_lat = live_num[known], live_lon[known], live_lat[known]
        masks: dict[str, NDArray[np.bool_]] = {}

        # Per-member filters cost O(members): computed only when a cached index is missing,
        # live locations are present or a mode ranks by straight line.
        def base_ok() -> NDArray[np.bool_]:
            if "base" not in masks:
                masks["base"] = self.member_filter(want, weekday, second)
            return masks["base"]

        def member_ok(day: int, sec: float) -> NDArray[np.bool_]:
            if (day, sec) == (weekday, second):
                return base_ok()
            return self.member_filter(want, day, sec)

        def eligible() -> NDArray[np.bool_]:
            if "eligible" not in masks:
                ok = base_ok().copy()
                ok[excluded] = False
                masks["eligible"] = ok
            return masks["eligible"]

        parts: list[tuple[NDArray[np.int64], NDArray[np.float64]]] = []
        method: Literal["street_network", "straight_line"] = "street_network"
        for code, name in enumerate(MODES):
            mp = self.modes[name]
            in_mode_live = self.mode[live_num] == code
            l_num = live_num[in_mode_live]
            l_lon, l_lat = live_lon[in_mode_live], live_lat[in_mode_live]
            if mp.n_members == 0:
                continue
            l_keep = eligible()[l_num] if l_num.size else np.zeros(0, dtype=bool)
            if mp.graph is None:
                method = "straight_line"
                parts.extend(
                    self._straight_line(
                        mp,
                        weekday,
                        second,
                        eligible(),
                        l_num,
                        l_lon,
                        l_lat,
                        l_keep,
                        lon=lon,
                        lat=lat,
                        limit=limit,
                        max_eta_s=max_eta_s,
                    )
                )
                continue
            anchors = mp.anchor_index(
                weekday=weekday,
                second=second,
                roles_mask=want,
                member_ok=member_ok,
                factor=self.factor,
            )
            if anchors.n_anchors == 0 and not l_keep.any():
                continue
            target, target_m = mp.graph.snapper.snap(lon, lat)
            offset_s = self.mobilization_s + float(target_m[0]) / self.walk_speed_mps
            skip = np.union1d(excluded, l_num)
            parts.append(
                rank_on_graph(
                    mp.graph.graph,
                    int(target[0]),
                    anchors,
                    k=limit,
                    max_eta_s=max_eta_s,
                    offset_s=offset_s,
                    skip=skip,
                )
            )
            if l_keep.any():
                node, dist_m = mp.graph.snapper.snap(l_lon[l_keep], l_lat[l_keep])
                # A live location outside the service area places its member out of reach.
                near = dist_m <= self.max_snap_m
                nums = l_num[l_keep][near]
                if nums.size:
                    live_index = AnchorIndex.build(
                        mp.graph.graph.n_nodes,
                        nums,
                        node[near],
                        dist_m[near] / self.walk_speed_mps,
                        self.factor[nums],
                    )
                    parts.append(
                        rank_on_graph(
                            mp.graph.graph,
                            int(target[0]),
                            live_index,
                            k=limit,
                            max_eta_s=max_eta_s,
                            offset_s=offset_s,
                        )
                    )
        members, etas, _ = merge_rankings(parts, limit=limit)
        candidates = [
            Candidate(
                member_id=self.ids[i],
                handle=self.handles[i],
                roles=self.roles[i],
                mode=MODES[int(self.mode[i])],
                eta_s=float(e),
                channels=self.channels[i] if self.channels else None,
            )
            for i, e in zip(members.tolist(), etas.tolist(), strict=True)
        ]
        return Ranking(candidates=candidates, method=method)

    def _straight_line(
        self,
        mp: ModePresence,
        weekday: int,
        second: float,
        eligible: NDArray[np.bool_],
        l_num: NDArray[np.int64],
        l_lon: NDArray[np.float64],
        l_lat: NDArray[np.float64],
        l_keep: NDArray[np.bool_],
        *,
        lon: float,
        lat: float,
        limit: int | None,
        max_eta_s: float,
    ) -> list[tuple[NDArray[np.int64], NDArray[np.float64]]]:
        ok = eligible.copy()
        ok[l_num] = False
        idx = mp.active(weekday=weekday, second=second, member_ok=ok)
        members = np.concatenate([mp.table.member[idx], l_num[l_keep]])
        a_lon = np.concatenate([mp.table.lon[idx], l_lon[l_keep]])
        a_lat = np.concatenate([mp.table.lat[idx], l_lat[l_keep]])
        speed = self.speeds_mps[mp.mode] / self.factor[members]
        return [
            rank_straight_line(
                members,
                a_lon,
                a_lat,
                target_lon=lon,
                target_lat=lat,
                speed_mps=speed,
                k=limit,
                max_eta_s=max_eta_s,
                offset_s=self.mobilization_s,
            )
        ]


def _member_channels(
    settings: Settings, members: Sequence[Any], memo: dict[bytes, tuple[str, ...]]
) -> list[tuple[str, ...] | None]:
    """Each member's notification channels, decrypting each distinct contact once.

    Rows without the contact column (older callers) give None: the notifying code then reads
    the member's record. ``memo`` maps ciphertexts to channels and is carried over to the
    next build (only the ones still in use stay).
    """
    cipher = contact_cipher(settings)
    out: list[tuple[str, ...] | None] = []
    seen: dict[bytes, tuple[str, ...]] = {}
    for row in members:
        if len(row) < 9:
            out.append(None)
            continue
        ciphertext = bytes(row[8]) if row[8] is not None else b""
        found = seen.get(ciphertext)
        if found is None:
            found = memo.get(ciphertext)
        if found is None:
            found = member_channels(cipher, row[0], ciphertext)
        seen[ciphertext] = found
        out.append(found)
    memo.clear()
    memo.update(seen)
    return out


@dataclass(frozen=True)
class _Schedules:
    """Zones or routes of indexed members: owner number, geometry WKB and weekly window."""

    owner: NDArray[np.int64]
    wkb: NDArray[np.object_]
    mask: NDArray[np.int64]
    start_s: NDArray[np.float64]
    end_s: NDArray[np.float64]

    @classmethod
    def parse(cls, rows: Sequence[Any], number: dict[uuid.UUID, int]) -> _Schedules:
        """From (member_id, wkb, days, start, end) rows; rows of unindexed members dropped."""
        kept = [row for row in rows if row[0] in number]
        wkb = np.empty(len(kept), dtype=object)
        wkb[:] = [bytes(row[1]) for row in kept]
        return cls(
            owner=np.array([number[row[0]] for row in kept], dtype=np.int64),
            wkb=wkb,
            mask=np.array([gp.days_mask(row[2]) for row in kept], dtype=np.int64),
            start_s=np.array([_seconds(row[3]) for row in kept], dtype=np.float64),
            end_s=np.array([_seconds(row[4]) for row in kept], dtype=np.float64),
        )

    def of(self, in_mode: NDArray[np.bool_]) -> _Schedules:
        """The rows whose owner is selected."""
        sel = in_mode[self.owner] if self.owner.size else np.zeros(0, dtype=bool)
        return _Schedules(
            self.owner[sel], self.wkb[sel], self.mask[sel], self.start_s[sel], self.end_s[sel]
        )


# Node of a zone outside the service area: the zone gives no anchor.
_FAR = -2


@dataclass(eq=False)
class _SnapMemo:
    """Snapped anchors of geometries (by WKB) on one graph, reused by the next rebuild.

    A member edit changes the presence token and forces a rebuild; only geometries not seen
    before are snapped again, so a rebuild costs the database read and concatenation, not
    the snapping of every member's zones and routes.
    """

    zones: dict[bytes, tuple[int, float, float]] = field(default_factory=dict)
    routes: dict[bytes, tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]] = field(
        default_factory=dict
    )

    def zone_anchors(
        self, wkbs: Sequence[bytes], mode_graph: ModeGraph | None, *, max_snap_m: float
    ) -> tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
        """Node (``_FAR``: none; -1: no graph) and lon/lat per zone."""
        missing = list({w for w in wkbs if w not in self.zones})
        if missing:
            polys = shapely.from_wkb(missing)
            if mode_graph is not None:
                _, _, node, dist = gp.zone_nodes(polys, mode_graph.graph, mode_graph.snapper)
                # A zone whose nearest node is beyond max_snap_m lies outside the service area.
                node = np.where(dist <= max_snap_m, node, _FAR)
                lon, lat = mode_graph.graph.lon[node], mode_graph.graph.lat[node]
            else:
                rep = shapely.point_on_surface(polys)
                lon, lat = shapely.get_x(rep), shapely.get_y(rep)
                node = np.full(len(missing), -1)
            for w, n, x, y in zip(missing, node.tolist(), lon.tolist(), lat.tolist(), strict=True):
                self.zones[w] = (n, x, y)
        got = [self.zones[w] for w in wkbs]
        return (
            np.array([g[0] for g in got], dtype=np.int32),
            np.array([g[1] for g in got], dtype=np.float64),
            np.array([g[2] for g in got], dtype=np.float64),
        )

    def route_anchors(
        self, wkbs: Sequence[bytes], mode_graph: ModeGraph | None, *, max_snap_m: float
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
        """Route index, node (-1: no graph) and lon/lat per anchor of the routes."""
        missing = list({w for w in wkbs if w not in self.routes})
        if missing:
            which, lon, lat = gp.route_points(shapely.from_wkb(missing))
            if mode_graph is not None:
                which, node, lon, lat = gp.route_nodes(
                    which, lon, lat, mode_graph.snapper, max_snap_m=max_snap_m
                )
            else:
                node = np.full(which.size, -1, dtype=np.int32)
            cuts = np.searchsorted(which, np.arange(1, len(missing)))
            for w, n, x, y in zip(
                missing, np.split(node, cuts), np.split(lon, cuts), np.split(lat, cuts), strict=True
            ):
                self.routes[w] = (n, x, y)
        got = [self.routes[w] for w in wkbs]
        if not got:
            return np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0), np.empty(0)
        counts = np.array([g[0].size for g in got], dtype=np.int64)
        return (
            np.repeat(np.arange(len(got), dtype=np.int64), counts),
            np.concatenate([g[0] for g in got]).astype(np.int32),
            np.concatenate([g[1] for g in got]),
            np.concatenate([g[2] for g in got]),
        )

    def keep_only(self, zones: set[bytes], routes: set[bytes]) -> None:
        """Forget geometries no member uses any more."""
        self.zones = {w: v for w, v in self.zones.items() if w in zones}
        self.routes = {w: v for w, v in self.routes.items() if w in routes}


def _mode_table(
    in_mode: NDArray[np.bool_],
    home: list[bytes | None],
    zones: _Schedules,
    routes: _Schedules,
    mode_graph: ModeGraph | None,
    *,
    max_snap_m: float,
    memo: _SnapMemo,
) -> gp.AnchorTable:
    """Home, zone and route anchors of one mode's members, snapped to its graph if any."""
    parts: list[tuple[NDArray[Any], ...]] = []

    # Home zones and scheduled zones: one representative node each.
    owners = np.array(
        [i for i in np.flatnonzero(in_mode).tolist() if home[i] is not None], np.int64
    )
    mode_zones = zones.of(in_mode)
    n_home = owners.size
    wkbs: list[bytes] = [home[i] for i in owners.tolist()] + list(mode_zones.wkb)
    if wkbs:
        owner = np.concatenate([owners, mode_zones.owner])
        kind = np.concatenate(
            [
                np.full(n_home, gp.KIND_HOME, np.int8),
                np.full(mode_zones.owner.size, gp.KIND_ZONE, np.int8),
            ]
        )
        mask = np.concatenate([np.full(n_home, gp.ALL_DAYS, np.int64), mode_zones.mask])
        start = np.concatenate([np.zeros(n_home), mode_zones.start_s])
        end = np.concatenate([np.zeros(n_home), mode_zones.end_s])
        node, lon, lat = memo.zone_anchors(wkbs, mode_graph, max_snap_m=max_snap_m)
        keep = node != _FAR
        parts.append(tuple(a[keep] for a in (owner, kind, node, lon, lat, mask, start, end)))

    # Routes: every node near the route.
    mode_routes = routes.of(in_mode)
    if mode_routes.owner.size:
        which, node, lon, lat = memo.route_anchors(
            list(mode_routes.wkb), mode_graph, max_snap_m=max_snap_m
        )
        parts.append(
            (
                mode_routes.owner[which],
                np.full(which.size, gp.KIND_ROUTE, np.int8),
                node,
                lon,
                lat,
                mode_routes.mask[which],
                mode_routes.start_s[which],
                mode_routes.end_s[which],
            )
        )

    if not parts:
        return gp.AnchorTable.build(*(np.empty(0) for _ in range(8)))
    columns = [np.concatenate([p[i] for p in parts]) for i in range(8)]
    return gp.AnchorTable.build(*columns)


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


def warm_presence(session_factory: Any, graphs: GraphStore, settings: Settings) -> PresenceIndex:
    """Build the presence index before the first alert needs it (start-up, in a thread)."""
    with session_factory() as session:
        return presence_index(session, graphs, settings)


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
