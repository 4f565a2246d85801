"""`ern graph`: build and inspect compiled street graphs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from geo.errors import GeoError
from geo.graph import MODES, Speeds, build_graphs, load_graphs, save_graph

graph_app = typer.Typer(help="Compiled street graphs (walk, bike, drive)", no_args_is_help=True)


Source = Annotated[
    str,
    typer.Option(
        "--source", help="an .osm.pbf / .osm / .osm.bz2 file, a place name, or bbox:W,S,E,N"
    ),
]
Modes = Annotated[str, typer.Option("--modes", help="comma-separated travel modes")]
Out = Annotated[Path, typer.Option("--out", help="directory for {mode}.arrays + {mode}.json")]
WalkSpeed = Annotated[
    float,
    typer.Option("--walk-speed-mps", envvar="ERN_WALK_SPEED_MPS", help="walking speed, m/s"),
]
BikeSpeed = Annotated[
    float,
    typer.Option("--bike-speed-mps", envvar="ERN_BIKE_SPEED_MPS", help="cycling speed, m/s"),
]
GraphDir = Annotated[Path, typer.Argument(help="directory of compiled graphs")]


@graph_app.command("build")
def build(
    source: Source,
    out: Out,
    modes: Modes = "walk,bike,drive",
    walk_speed_mps: WalkSpeed = 1.4,
    bike_speed_mps: BikeSpeed = 4.2,
) -> None:
    """Build one compiled graph per travel mode from OSM data and save it."""
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODES]
    if unknown or not wanted:
        typer.echo(f"unknown modes {unknown or wanted}: choose from {', '.join(MODES)}", err=True)
        raise typer.Exit(2)
    started = time.perf_counter()

    def progress(line: str) -> None:
        typer.echo(f"[{time.perf_counter() - started:6.1f} s] {line}")

    try:
        speeds = Speeds(walk_mps=walk_speed_mps, bike_mps=bike_speed_mps)
        graphs = build_graphs(source, wanted, speeds=speeds, progress=progress)
    except (GeoError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for graph in graphs.values():
        path = save_graph(graph, out)
        progress(f"{graph.mode}: wrote {path} ({graph.n_nodes:,} nodes, {graph.n_edges:,} edges)")
    typer.echo(
        "Map data © OpenStreetMap contributors, ODbL (https://www.openstreetmap.org/copyright)"
    )


@graph_app.command("info")
def info(graph_dir: GraphDir) -> None:
    """Show the compiled graphs in a directory, verified against their manifests."""
    try:
        graphs = load_graphs(graph_dir)
    except GeoError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not graphs:
        typer.echo(f"no compiled graphs in {graph_dir}")
        raise typer.Exit(1)
    for mode, graph in graphs.items():
        m = graph.manifest
        counts = m["counts"]
        typer.echo(
            f"{mode}: {counts['nodes']:,} nodes, {counts['edges']:,} edges, "
            f"{counts['dropped_nodes']:,} dropped outside the largest SCC; "
            f"source {m['source']['text']}; built {m['built_at']}; {m['attribution']}"
        )
