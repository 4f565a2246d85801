"""The weekly profile's shortcut (one field per distinct responder set) against hour by hour."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import numpy as np
import shapely
from sqlalchemy.orm import Session

from api.coverage import fields, service
from api.graphs import GraphStore
from api.presence.cache import presence_index
from api.settings import Settings
from geo import coverage as gc
from geo import presence as gp
from tests.presence.conftest import AddMember, node_box

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def _seed(db: Session, graphs: GraphStore, add_member: AddMember) -> None:
    """Walkers at home, at work on weekdays, on commutes, some with quiet hours."""
    rng = np.random.default_rng(21)
    walk = graphs.by_mode["walk"].graph
    picks = rng.choice(walk.n_nodes, 90, replace=False).tolist()
    for i in range(30):
        home, work, other = picks[3 * i], picks[3 * i + 1], picks[3 * i + 2]
        route = shapely.LineString(
            [(walk.lon[home], walk.lat[home]), (walk.lon[other], walk.lat[other])]
        )
        start = 7 + i % 3
        add_member(
            node_box(walk, home),
            zones=[(node_box(walk, work), WEEKDAYS, time(start + 1), time(17))],
            routes=[(route, WEEKDAYS, time(start), time(start + 1))] if i % 2 else [],
            quiet=(time(23), time(6)) if i % 4 == 0 else None,
            roles=("responder",) if i % 5 else ("defense",),
        )
    db.commit()


class TestProfileFields:
    def test_distinct_responder_sets_give_the_hours_computed_one_by_one(
        self, db: Session, graphs: GraphStore, settings: Settings, add_member: AddMember
    ) -> None:
        _seed(db, graphs, add_member)
        index = presence_index(db, graphs, settings)
        params = fields.Params(mode="walk", minutes=5.0, k=2, res=9)
        now = datetime(2026, 12, 1, tzinfo=UTC)
        profile = service.profile_of(index, graphs, settings, params, alerts=[], now=now)
        ev = fields.evaluation(graphs, settings, "walk")
        street = gc.node_street_m(ev.graph.graph)
        segments = set()
        for hour in profile.hours:
            weekday, second = fields.hour_time(hour.hour)
            segments.add(gp.week_segment(index.modes["walk"].boundaries, weekday, second))
            present = fields.responders_at(index, ["walk"], weekday=weekday, second=second)
            fig = fields.figures(graphs, settings, ev, present, params, times=False)
            one = gc.summarise_hour(fig.stats, fig.field, fig.p, street, k=2, threshold_s=300.0)
            assert (hour.covered_share, hour.mean_p_covered, hour.gap_cells) == (
                one.covered_share,
                one.mean_p_covered,
                one.gap_cells,
            ), hour.hour
        # the shortcut is taken: fewer fields than presence segments, yet more than one
        assert 1 < profile.fields < len(segments)

    def test_hours_with_one_responder_key_have_one_selection(
        self, db: Session, graphs: GraphStore, settings: Settings, add_member: AddMember
    ) -> None:
        _seed(db, graphs, add_member)
        index = presence_index(db, graphs, settings)
        seen: dict[bytes, Any] = {}
        for hour in range(168):
            weekday, second = fields.hour_time(hour)
            key = fields.responders_key(index, ["walk"], weekday=weekday, second=second)
            present = fields.responders_at(index, ["walk"], weekday=weekday, second=second)
            got = (present.nodes["walk"].tolist(), present.members["walk"].tolist())
            if key in seen:
                assert seen[key] == got, hour
            seen[key] = got
        assert len(seen) > 2  # the hours do differ
