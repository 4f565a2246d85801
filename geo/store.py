"""The compiled graph store: arrays and a JSON manifest per mode, saved, checked and loaded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geo.build import FORMAT_VERSION, Progress, Speeds, build_graphs
from geo.csr import ARRAY_NAMES, MODES, StreetGraph
from geo.errors import GraphCacheMismatch, GraphUnavailable, SourceUnavailable
from geo.osm import _classify_source, _Source, file_sha256

# ensure_graphs' default speeds (one instance, as a default argument must be)
_DEFAULT_SPEEDS = Speeds()


def save_graph(graph: StreetGraph, out_dir: Path) -> Path:
    """Save a compiled graph as ``{mode}.npz`` (uncompressed) and its ``{mode}.json`` manifest.

    The manifest records the npz's SHA-256, which :func:`load_graph` checks.

    Parameters
    ----------
    graph
        The graph to save.
    out_dir
        Directory, created if missing.

    Returns
    -------
    Path of the npz file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / f"{graph.mode}.npz"
    tmp = out_dir / f".{graph.mode}.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **{name: getattr(graph, name) for name in ARRAY_NAMES})
    manifest = dict(graph.manifest)
    manifest["npz"] = {"file": npz.name, "sha256": file_sha256(tmp)}
    tmp_json = out_dir / f".{graph.mode}.json.tmp"
    tmp_json.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(npz)
    tmp_json.replace(out_dir / f"{graph.mode}.json")
    return npz


def _check_source(manifest: dict[str, Any], where: Path) -> None:
    """Refuse a manifest whose source file still exists but has other content."""
    source = manifest.get("source") or {}
    path = source.get("path")
    if not path or not source.get("sha256"):
        return
    p = Path(path)
    if not p.is_file():
        return
    stat = p.stat()
    if stat.st_size == source.get("size") and stat.st_mtime_ns == source.get("mtime_ns"):
        return
    if file_sha256(p) != source["sha256"]:
        msg = (
            f"compiled graph {where} was built from a different version of {p} "
            "(sha256 differs): rebuild it with `ern graph build`"
        )
        raise GraphCacheMismatch(msg)


def load_graph(out_dir: Path, mode: str, *, warm_up: bool = True) -> StreetGraph:
    """Load a compiled graph saved by :func:`save_graph`, refusing one that does not match.

    Checks the format version, the npz's SHA-256 against the manifest, the array sizes
    against the manifest's counts and, when the source file still exists, its SHA-256
    (skipped while its size and mtime equal those recorded).

    Parameters
    ----------
    out_dir
        Directory holding ``{mode}.npz`` and ``{mode}.json``.
    mode
        Travel mode.
    warm_up
        Compile (or load from numba's cache) the search kernels now, not on the first query.

    Returns
    -------
    The graph.

    Raises
    ------
    GraphUnavailable
        No compiled graph of this mode in ``out_dir``.
    GraphCacheMismatch
        The files do not match their manifest or its source.
    """
    out_dir = Path(out_dir)
    npz = out_dir / f"{mode}.npz"
    meta = out_dir / f"{mode}.json"
    if not npz.is_file() or not meta.is_file():
        msg = f"no compiled {mode} graph in {out_dir} (run `ern graph build`)"
        raise GraphUnavailable(msg)
    try:
        manifest = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"unreadable manifest {meta}: {exc}"
        raise GraphCacheMismatch(msg) from exc
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("mode") != mode:
        msg = (
            f"{meta}: format {manifest.get('format_version')!r} / mode {manifest.get('mode')!r}, "
            f"expected format {FORMAT_VERSION} / mode {mode!r}"
        )
        raise GraphCacheMismatch(msg)
    data_bytes = npz.read_bytes()
    recorded = (manifest.get("npz") or {}).get("sha256")
    if hashlib.sha256(data_bytes).hexdigest() != recorded:
        msg = f"{npz} does not match the sha256 recorded in {meta.name}"
        raise GraphCacheMismatch(msg)
    _check_source(manifest, npz)
    import io

    with np.load(io.BytesIO(data_bytes), allow_pickle=False) as data:
        arrays = {name: data[name] for name in ARRAY_NAMES}
    counts = manifest.get("counts") or {}
    n, m = len(arrays["lon"]), len(arrays["indices"])
    if (n, m) != (counts.get("nodes"), counts.get("edges")) or len(arrays["indptr"]) != n + 1:
        msg = (
            f"{npz}: {n} nodes / {m} edges, "
            f"manifest says {counts.get('nodes')} / {counts.get('edges')}"
        )
        raise GraphCacheMismatch(msg)
    graph = StreetGraph(mode=mode, **arrays, manifest=manifest)
    if warm_up:
        from geo import _kernels

        _kernels.warm_up()
    return graph


def load_graphs(out_dir: Path) -> dict[str, StreetGraph]:
    """Load every compiled mode present in a directory.

    Parameters
    ----------
    out_dir
        Directory of ``{mode}.npz`` / ``{mode}.json`` pairs.

    Returns
    -------
    Graphs by mode (possibly empty).
    """
    out_dir = Path(out_dir)
    return {
        mode: load_graph(out_dir, mode)
        for mode in MODES
        if (out_dir / f"{mode}.npz").is_file() and (out_dir / f"{mode}.json").is_file()
    }


def _matches_request(graph: StreetGraph, src: _Source, speeds: Speeds) -> bool:
    source = graph.manifest.get("source") or {}
    if src.path is not None and source.get("path") != str(src.path):
        return False
    if src.path is None and source.get("text") != src.text:
        return False
    wanted = {"walk": speeds.walk_mps, "bike": speeds.bike_mps}.get(graph.mode)
    recorded = (graph.manifest.get("speeds") or {}).get(f"{graph.mode}_mps")
    return wanted is None or recorded == wanted


def ensure_graphs(
    source: str | Path,
    out_dir: Path,
    modes: Sequence[str],
    *,
    speeds: Speeds = _DEFAULT_SPEEDS,
    progress: Progress | None = None,
) -> dict[str, StreetGraph]:
    """Load the compiled graphs of ``modes``, (re)building those missing, stale or mismatched.

    A cache is reused only when it loads cleanly (:func:`load_graph`) and was built from
    the same source with the same speeds; otherwise it is rebuilt from ``source`` and saved.

    Parameters
    ----------
    source
        As in :func:`build_graphs`.
    out_dir
        Cache directory.
    modes
        Travel modes.
    speeds
        Walking and cycling speeds.
    progress
        Called with one line per step.

    Returns
    -------
    Graphs by mode.
    """
    say: Progress = progress or (lambda line: None)
    out_dir = Path(out_dir)
    try:
        src = _classify_source(source)
    except SourceUnavailable:
        # the source file is gone: clean caches built from it remain usable
        cached = _cached_from(source, out_dir, modes)
        if cached is None:
            raise
        say(f"source {source} is missing; using the compiled graphs in {out_dir}")
        return cached
    graphs: dict[str, StreetGraph] = {}
    stale: list[str] = []
    for mode in dict.fromkeys(modes):
        try:
            graph = load_graph(out_dir, mode)
        except GraphUnavailable:
            say(f"{mode}: no compiled graph in {out_dir}; building")
            stale.append(mode)
            continue
        except GraphCacheMismatch as exc:
            say(f"{mode}: cache refused ({exc}); rebuilding")
            stale.append(mode)
            continue
        if not _matches_request(graph, src, speeds):
            say(f"{mode}: cache built from another source or speeds; rebuilding")
            stale.append(mode)
            continue
        graphs[mode] = graph
    if stale:
        for mode, graph in build_graphs(source, stale, speeds=speeds, progress=say).items():
            save_graph(graph, out_dir)
            graphs[mode] = graph
            say(f"{mode}: saved to {out_dir}")
    return graphs


def _cached_from(
    source: str | Path, out_dir: Path, modes: Sequence[str]
) -> dict[str, StreetGraph] | None:
    """The cached graphs of ``modes`` if all load cleanly and were built from ``source``."""
    wanted = {str(source), str(Path(source).expanduser().resolve())}
    graphs: dict[str, StreetGraph] = {}
    for mode in dict.fromkeys(modes):
        try:
            graph = load_graph(out_dir, mode)
        except (GraphUnavailable, GraphCacheMismatch):
            return None
        recorded = graph.manifest.get("source") or {}
        if not ({recorded.get("text"), recorded.get("path")} & wanted):
            return None
        graphs[mode] = graph
    return graphs
