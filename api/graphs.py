"""The loaded street graphs, one per travel mode, with their snappers; built once, shared."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from api.settings import Settings
from geo.errors import GeoError, GraphUnavailable
from geo.graph import Speeds, StreetGraph, ensure_graphs, helsinki_extract, load_graph
from geo.snap import Snapper

log = logging.getLogger("ern.graphs")


@dataclass(frozen=True)
class ModeGraph:
    """A compiled graph and its snapper."""

    graph: StreetGraph
    snapper: Snapper

    @cached_property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the graph's nodes, degrees, rounded to 6 decimals."""
        west, south, east, north = self.graph.bbox
        return (round(west, 6), round(south, 6), round(east, 6), round(north, 6))


@dataclass
class GraphStore:
    """Graphs by mode; a mode that failed to load is absent and its reason kept."""

    by_mode: dict[str, ModeGraph] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def get(self, mode: str) -> ModeGraph:
        """The graph for ``mode``, or GraphUnavailable."""
        try:
            return self.by_mode[mode]
        except KeyError:
            reason = self.problems.get(mode, "not configured")
            msg = f"no street graph for mode {mode!r}: {reason}"
            raise GraphUnavailable(msg) from None

    def status(self) -> dict[str, str]:
        """Per mode: 'loaded (N nodes)' or the reason it is missing."""
        out = {m: f"loaded ({g.graph.n_nodes} nodes)" for m, g in self.by_mode.items()}
        out.update(self.problems)
        return out

    def service_area(self) -> dict[str, tuple[float, float, float, float]]:
        """Per loaded mode, its graph's bounding box (west, south, east, north)."""
        return {m: g.bbox for m, g in self.by_mode.items()}


def speeds_from(settings: Settings) -> Speeds:
    """Walk and bike speeds from the settings."""
    return Speeds(walk_mps=settings.walk_speed_mps, bike_mps=settings.bike_speed_mps)


def no_graphs_reason(settings: Settings) -> str | None:
    """Why `ern serve` would start without any graph (nothing to build, none compiled), or None."""
    if settings.embedded or settings.graph_source is not None:
        return None  # graphs are built at start when missing
    graph_dir = settings.resolved_graph_dir
    if any((graph_dir / f"{mode}.json").is_file() for mode in settings.modes):
        return None
    return (
        f"no compiled street graph ({', '.join(settings.modes)}) in ERN_GRAPH_DIR={graph_dir}: "
        "every alert would be ranked by straight-line distance. Build them with "
        f"`ern graph build --source <extract.osm.pbf> --out {graph_dir}`, set "
        "ERN_GRAPH_SOURCE to build them at start (the directory must be writable), or set "
        "ERN_ALLOW_NO_GRAPHS=true to serve without them"
    )


def load_store(settings: Settings, *, build_missing: bool) -> GraphStore:
    """Load the compiled graphs; with ``build_missing`` build them from the source first."""
    graph_dir = settings.resolved_graph_dir
    store = GraphStore()
    loaded: dict[str, StreetGraph] = {}
    if build_missing:
        source: str | Path = settings.graph_source or helsinki_extract()
        try:
            loaded = ensure_graphs(
                source,
                graph_dir,
                settings.modes,
                speeds=speeds_from(settings),
                progress=lambda line: log.info("graph build: %s", line),
            )
        except GeoError as exc:
            log.error("could not build graphs from %s: %s", source, exc)
    for mode in settings.modes:
        graph = loaded.get(mode)
        if graph is None:
            try:
                graph = load_graph(graph_dir, mode)
            except (GeoError, OSError) as exc:
                store.problems[mode] = f"unavailable: {exc}"
                log.warning("graph %s unavailable: %s", mode, exc)
                continue
        if graph.manifest.get("format_version") == 1:
            log.warning(
                "graph %s in %s is in format 1 (%s.npz): each process holds its own copy; "
                "rebuild with `ern graph build --out %s`, or start once with a writable "
                "directory and ERN_GRAPH_SOURCE to convert it to shared memory-mapped arrays",
                mode,
                graph_dir,
                mode,
                graph_dir,
            )
        store.by_mode[mode] = ModeGraph(graph=graph, snapper=Snapper(graph))
    return store
