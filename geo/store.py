"""The compiled graph store: arrays and a JSON manifest per mode, saved, checked and loaded."""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geo.build import FORMAT_VERSION, Progress, Speeds, build_graphs
from geo.csr import ARRAY_NAMES, MODES, StreetGraph
from geo.errors import GraphCacheMismatch, GraphUnavailable, SourceUnavailable
from geo.osm import _classify_source, _Source, file_sha256

# ensure_graphs' default speeds (one instance, as a default argument must be)
_DEFAULT_SPEEDS = Speeds()
# array offsets in a .arrays file: a cache line, more than any dtype's alignment
_ALIGN = 64


def save_graph(graph: StreetGraph, out_dir: Path) -> Path:
    """Save a compiled graph as ``{mode}.arrays`` and its ``{mode}.json`` manifest.

    The arrays are written raw, one after the other at 64-byte aligned offsets, so that
    :func:`load_graph` can memory-map them read-only and every process that loads the
    graph shares one copy through the page cache. The manifest records each array's
    dtype, offset and length, and the file's size, SHA-256 (computed once, here) and
    modification time. Both files are written beside and renamed into place, so a
    process that has the old file mapped keeps reading the old, unchanged data. A
    ``{mode}.npz`` of format 1 left in the directory is removed.

    Parameters
    ----------
    graph
        The graph to save.
    out_dir
        Directory, created if missing.

    Returns
    -------
    Path of the arrays file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / f"{graph.mode}.arrays"
    tmp = out_dir / f".{graph.mode}.arrays.tmp"
    layout: dict[str, dict[str, Any]] = {}
    digest = hashlib.sha256()
    offset = 0
    with open(tmp, "wb") as f:
        for name in ARRAY_NAMES:
            array = np.ascontiguousarray(getattr(graph, name))
            array = array.astype(array.dtype.newbyteorder("<"), copy=False)
            pad = -offset % _ALIGN
            raw = b"\0" * pad + array.tobytes()
            f.write(raw)
            digest.update(raw)
            offset += pad
            layout[name] = {"dtype": array.dtype.str, "offset": offset, "length": len(array)}
            offset += array.nbytes
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(data)
    stat = data.stat()
    manifest = {k: v for k, v in graph.manifest.items() if k != "npz"}
    manifest["format_version"] = FORMAT_VERSION
    manifest.setdefault("mode", graph.mode)
    # graphs made with StreetGraph.from_edges carry no counts; load_graph checks them
    manifest["counts"] = {"nodes": graph.n_nodes, "edges": graph.n_edges} | dict(
        manifest.get("counts") or {}
    )
    manifest["arrays"] = {
        "file": data.name,
        "size": stat.st_size,
        "sha256": digest.hexdigest(),
        "mtime_ns": stat.st_mtime_ns,
        "layout": layout,
    }
    tmp_json = out_dir / f".{graph.mode}.json.tmp"
    tmp_json.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp_json.replace(out_dir / f"{graph.mode}.json")
    (out_dir / f"{graph.mode}.npz").unlink(missing_ok=True)
    return data


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

    The arrays are memory-mapped read-only: the pages come from the page cache, shared
    by every process that loads the same file, and are read from disk on first touch.
    Checks the format version, the file size against the manifest and, unless the file
    still has the modification time recorded when it was written (and hashed), its
    SHA-256; then the array lengths against the manifest's counts and, when the source
    file still exists, its SHA-256 (skipped while its size and mtime equal those
    recorded). A directory of format 1 (``{mode}.npz``) still loads, into this
    process's own memory; :func:`ensure_graphs` rewrites it in the current format.

    Parameters
    ----------
    out_dir
        Directory holding ``{mode}.arrays`` (or ``{mode}.npz``) and ``{mode}.json``.
    mode
        Travel mode.
    warm_up
        Compile (or load from numba's cache) the search kernels now, not on the first query.

    Returns
    -------
    The graph; ``manifest["format_version"]`` says which format it was read from.

    Raises
    ------
    GraphUnavailable
        No compiled graph of this mode in ``out_dir``.
    GraphCacheMismatch
        The files do not match their manifest or its source, or have an unknown format.
    """
    out_dir = Path(out_dir)
    meta = out_dir / f"{mode}.json"
    if not meta.is_file():
        msg = f"no compiled {mode} graph in {out_dir} (run `ern graph build`)"
        raise GraphUnavailable(msg)
    try:
        manifest = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"unreadable manifest {meta}: {exc}"
        raise GraphCacheMismatch(msg) from exc
    version = manifest.get("format_version")
    if version not in (1, FORMAT_VERSION) or manifest.get("mode") != mode:
        msg = (
            f"{meta}: format {version!r} / mode {manifest.get('mode')!r}, expected format "
            f"{FORMAT_VERSION} (or 1) / mode {mode!r}: rebuild it with `ern graph build`"
        )
        raise GraphCacheMismatch(msg)
    if version == 1:
        where, arrays = _read_npz(out_dir / f"{mode}.npz", manifest, meta)
    else:
        where, arrays = _map_arrays(out_dir, manifest, meta)
    _check_source(manifest, where)
    counts = manifest.get("counts") or {}
    n, m = len(arrays["lon"]), len(arrays["indices"])
    if (
        (n, m) != (counts.get("nodes"), counts.get("edges"))
        or any(len(arrays[k]) != n + 1 for k in ("indptr", "rev_indptr"))
        or any(len(arrays[k]) != m for k in ("travel_time_s", "rev_indices", "rev_travel_time_s"))
        or any(len(arrays[k]) != n for k in ("lat", "osm_id"))
        or any(int(arrays[k][-1]) != m or int(arrays[k][0]) != 0 for k in ("indptr", "rev_indptr"))
    ):
        msg = (
            f"{where}: {n} nodes / {m} edges or inconsistent array lengths, "
            f"manifest says {counts.get('nodes')} / {counts.get('edges')}"
        )
        raise GraphCacheMismatch(msg)
    graph = StreetGraph(mode=mode, **arrays, manifest=manifest)
    if warm_up:
        from geo import _kernels

        _kernels.warm_up()
    return graph


def _read_npz(
    npz: Path, manifest: dict[str, Any], meta: Path
) -> tuple[Path, dict[str, NDArray[Any]]]:
    """The arrays of a format-1 ``.npz`` read into memory, after checking its SHA-256."""
    if not npz.is_file():
        msg = f"no compiled {manifest.get('mode')} graph: {npz} is missing (run `ern graph build`)"
        raise GraphUnavailable(msg)
    data_bytes = npz.read_bytes()
    recorded = (manifest.get("npz") or {}).get("sha256")
    if hashlib.sha256(data_bytes).hexdigest() != recorded:
        msg = f"{npz} does not match the sha256 recorded in {meta.name}"
        raise GraphCacheMismatch(msg)
    with np.load(io.BytesIO(data_bytes), allow_pickle=False) as data:
        return npz, {name: data[name] for name in ARRAY_NAMES}


def _map_arrays(
    out_dir: Path, manifest: dict[str, Any], meta: Path
) -> tuple[Path, dict[str, NDArray[Any]]]:
    """The arrays of a ``.arrays`` file as read-only views of one shared memory map."""
    info = manifest.get("arrays") or {}
    path = out_dir / str(info.get("file") or f"{manifest.get('mode')}.arrays")
    if not path.is_file():
        msg = f"no compiled {manifest.get('mode')} graph: {path} is missing (run `ern graph build`)"
        raise GraphUnavailable(msg)
    stat = path.stat()
    if stat.st_size != info.get("size"):
        msg = f"{path} has {stat.st_size} bytes, {meta.name} says {info.get('size')}"
        raise GraphCacheMismatch(msg)
    # Hashed when written; a file with that same mtime was not rewritten since. A copied or
    # touched file is hashed again (streaming, through the page cache) before use.
    if stat.st_mtime_ns != info.get("mtime_ns") and file_sha256(path) != info.get("sha256"):
        msg = f"{path} does not match the sha256 recorded in {meta.name}"
        raise GraphCacheMismatch(msg)
    layout = info.get("layout") or {}
    arrays: dict[str, NDArray[Any]] = {}
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if stat.st_size else None
    for name in ARRAY_NAMES:
        spec: dict[str, Any] = layout.get(name) or {}
        try:
            dtype = np.dtype(spec["dtype"])
            offset, length = int(spec["offset"]), int(spec["length"])
            if mapped is None or offset + length * dtype.itemsize > stat.st_size:
                raise ValueError("outside the file")
            # views keep the map open; it closes when the last array goes
            arrays[name] = np.frombuffer(mapped, dtype=dtype, count=length, offset=offset)
        except (TypeError, KeyError, ValueError) as exc:
            msg = f"{meta.name}: bad layout of array {name!r} in {path}: {exc}"
            raise GraphCacheMismatch(msg) from exc
    return path, arrays


def load_graphs(out_dir: Path) -> dict[str, StreetGraph]:
    """Load every compiled mode present in a directory.

    Parameters
    ----------
    out_dir
        Directory of ``{mode}.json`` manifests with their arrays.

    Returns
    -------
    Graphs by mode (possibly empty).
    """
    out_dir = Path(out_dir)
    present = [mode for mode in MODES if (out_dir / f"{mode}.json").is_file()]
    return {mode: load_graph(out_dir, mode) for mode in present}


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
        if graph.manifest.get("format_version") != FORMAT_VERSION:
            # same arrays, rewritten so that they are memory-mapped (shared) from now on
            try:
                save_graph(graph, out_dir)
                graph = load_graph(out_dir, mode)
                say(f"{mode}: converted to format {FORMAT_VERSION} (memory-mapped) in {out_dir}")
            except OSError as exc:
                say(f"{mode}: format 1 kept, each process holds its own copy ({exc})")
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
