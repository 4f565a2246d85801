"""api/presence/ is split by idea; api.presence.service still answers every name it used to hold."""

from __future__ import annotations

import importlib
from pathlib import Path

import api.presence.service as service

# The names other modules and tests imported from api.presence.service before the split.
FORMER_NAMES = (
    "_roles_mask",
    "check_in_service_area",
    "rank_members",
    "invalidate_presence",
    "presence_index",
    "warm_presence",
    "Candidate",
    "Ranking",
    "PresenceIndex",
    "MODES",
    "away_member_ids",
    "purge_expired_locations",
    "snooze_until_resumed",
    "put_location",
    "delete_location",
    "put_snooze",
    "delete_snooze",
    "snoozed_until",
    "mode_speed_mps",
)
HOMES = {
    "check_in_service_area": "api.presence.area",
    "rank_members": "api.presence.ranking",
    "away_member_ids": "api.presence.ranking",
    "invalidate_presence": "api.presence.cache",
    "presence_index": "api.presence.cache",
    "warm_presence": "api.presence.cache",
    "Candidate": "api.presence.candidates",
    "Ranking": "api.presence.candidates",
    "PresenceIndex": "api.presence.index",
    "MODES": "api.presence.modes",
}


def test_service_re_exports_the_former_names_from_their_homes() -> None:
    missing = [name for name in FORMER_NAMES if not hasattr(service, name)]
    assert missing == []
    for name, module in HOMES.items():
        assert getattr(service, name) is getattr(importlib.import_module(module), name), name
    assert service._roles_mask({"responder", "coordinator"}) == 5


def test_presence_modules_stay_small() -> None:
    folder = Path(service.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 450} == {}
