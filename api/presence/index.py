"""The presence index: who can be at a location soonest at a time, ranked in memory.

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
- The alert's node per mode comes from a :class:`api.presence.area.SnappedPoint`: the
  service-area check snaps the point to the walk graph, ranking snaps it only to the other
  modes' graphs it ranks on, so an alert's point is snapped once per mode graph.
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

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from api.graphs import GraphStore
from api.members.crypto import contact_cipher
from api.notify.service import member_channels
from api.presence.anchors import Schedules, SnapMemo, mode_table, posix_seconds, seconds_of_day
from api.presence.area import SnappedPoint
from api.presence.candidates import Candidate, Ranking
from api.presence.modes import MODES, mask_of_roles, mode_speed_mps
from api.presence.segments import ModePresence
from api.settings import Settings
from geo import presence as gp
from geo.rank import merge_rankings, rank_on_graph, rank_straight_line, speed_factor
from geo.route import AnchorIndex


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
    memos: dict[str, SnapMemo] = field(default_factory=dict)
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
        memos: dict[str, SnapMemo] = dict(previous.memos) if previous is not None else {}
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
        zone_rows = Schedules.parse(zones, number)
        route_rows = Schedules.parse(routes, number)
        quiet_start = np.array([seconds_of_day(row[5]) for row in members])
        quiet_end = np.array([seconds_of_day(row[6]) for row in members])
        snoozed_until = np.array(
            [posix_seconds(row[9]) if len(row) > 9 else math.nan for row in members], dtype=float
        )
        channel_memo = dict(previous.channel_memo) if previous is not None else {}
        channels = _member_channels(settings, members, channel_memo)
        modes: dict[str, ModePresence] = {}
        for code, name in enumerate(MODES):
            mode_graph = graphs.by_mode.get(name)
            in_mode = mode == code
            memo = memos.get(name) or SnapMemo()
            table = mode_table(
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
            roles_mask=np.array([mask_of_roles(row[2] or ()) for row in members], dtype=np.int64),
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
        point: SnappedPoint | None = None,
    ) -> Ranking:
        """Rank members at a time: one bounded search per mode (plus one for live locations).

        ``point``: (lon, lat) already snapped to some graphs (the service-area check's);
        it is snapped here only to the graphs it lacks, once each.
        """
        if point is None:
            point = SnappedPoint(lon=lon, lat=lat)
        elif (point.lon, point.lat) != (lon, lat):
            msg = f"snapped point ({point.lon}, {point.lat}) is not the point ranked ({lon}, {lat})"
            raise ValueError(msg)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        local = at.astimezone(self.timezone)
        weekday = local.weekday()
        second = float(local.hour * 3600 + local.minute * 60 + local.second)
        # -1: no role filter (a key of its own: members without any role are ranked too)
        want = -1 if roles is None else mask_of_roles(roles)
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
            target, target_m = point.on(name, mp.graph)
            offset_s = self.mobilization_s + target_m / self.walk_speed_mps
            skip = np.union1d(excluded, l_num)
            parts.append(
                rank_on_graph(
                    mp.graph.graph,
                    target,
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
                            target,
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
