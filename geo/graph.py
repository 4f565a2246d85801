"""Street graphs per travel mode: one import for the graph, its building and its store.

The parts live in their own modules: :mod:`geo.csr` (the in-memory graph and its
conversions), :mod:`geo.osm` (reading OSM extracts and Overpass), :mod:`geo.build`
(compiling way segments to CSR arrays) and :mod:`geo.store` (the compiled files and
their manifest). ``from geo.graph import X`` keeps working for each public name.
"""

from __future__ import annotations

from geo.build import (
    ATTRIBUTION,
    FORMAT_VERSION,
    OSRM_CAR_KPH,
    Progress,
    Speeds,
    build_graphs,
    drive_speeds_kph,
    parse_maxspeed_kph,
)
from geo.csr import ARRAY_NAMES, MODES, StreetGraph
from geo.osm import file_sha256, haversine_length_m, helsinki_extract
from geo.store import ensure_graphs, load_graph, load_graphs, save_graph

__all__ = [
    "ARRAY_NAMES",
    "ATTRIBUTION",
    "FORMAT_VERSION",
    "MODES",
    "OSRM_CAR_KPH",
    "Progress",
    "Speeds",
    "StreetGraph",
    "build_graphs",
    "drive_speeds_kph",
    "ensure_graphs",
    "file_sha256",
    "haversine_length_m",
    "helsinki_extract",
    "load_graph",
    "load_graphs",
    "parse_maxspeed_kph",
    "save_graph",
]
