"""api/alerts/ is split by idea; api.alerts.service still answers the names it used to hold."""

from __future__ import annotations

import importlib
from pathlib import Path

import api.alerts.service as service

HOMES = {
    "create_alert": "api.alerts.raising",
    "create_alert_as": "api.alerts.raising",
    "top_up_reserve": "api.alerts.raising",
    "request_hash": "api.alerts.raising",
    "KIND_ROLES": "api.alerts.raising",
    "arrival_ranking": "api.alerts.acceptance",
    "first_wave_size": "api.alerts.acceptance",
    "respond": "api.alerts.answers",
    "close": "api.alerts.answers",
    "fulfil": "api.alerts.answers",
    "location_text": "api.alerts.messages",
    "alert_payload": "api.alerts.messages",
    "notify_alert": "api.alerts.messages",
    "AlertFacts": "api.alerts.facts",
    "lonlat": "api.alerts.facts",
    "AlertAccess": "api.alerts.views",
    "visible_alert": "api.alerts.views",
    "read_alert": "api.alerts.views",
    "coordinator_view": "api.alerts.views",
}


def test_service_re_exports_the_former_names_from_their_homes() -> None:
    for name, module in HOMES.items():
        assert getattr(service, name) is getattr(importlib.import_module(module), name), name
    assert callable(service.purge_alerts)
    assert service.location_text(lon=24.94, lat=60.17) == "(lat, lon): 60.17000, 24.94000"


def test_alerts_modules_stay_small() -> None:
    folder = Path(service.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 500} == {}
