"""Imports every domain's tables so that Base.metadata knows them all (Alembic, tests)."""

from __future__ import annotations

import importlib

DOMAINS = ("members", "notify", "presence", "alerts", "sms", "rallies")


def import_all_models() -> None:
    """Import ``api.<domain>.models`` for each domain that exists."""
    for domain in DOMAINS:
        try:
            importlib.import_module(f"api.{domain}.models")
        except ModuleNotFoundError as exc:
            if exc.name not in (f"api.{domain}", f"api.{domain}.models"):
                raise
