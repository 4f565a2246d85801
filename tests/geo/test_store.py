"""The compiled graph store: memory-mapped read-only arrays, cheap checks at load, format 1."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geo.errors import GraphCacheMismatch
from geo.graph import ARRAY_NAMES, FORMAT_VERSION, StreetGraph, ensure_graphs, load_graph
from geo.route import k_nearest_field
from geo.store import save_graph
from tests.paths import HELSINKI


def _save_format_1(graph: StreetGraph, out_dir: Path) -> None:
    """A directory as earlier versions of ern wrote it: {mode}.npz and a format-1 manifest."""
    import hashlib

    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / f"{graph.mode}.npz"
    with open(npz, "wb") as f:
        np.savez(f, **{name: np.asarray(getattr(graph, name)) for name in ARRAY_NAMES})
    manifest = {k: v for k, v in graph.manifest.items() if k != "arrays"}
    manifest["format_version"] = 1
    manifest["npz"] = {"file": npz.name, "sha256": hashlib.sha256(npz.read_bytes()).hexdigest()}
    (out_dir / f"{graph.mode}.json").write_text(json.dumps(manifest))


def _mapped_base(array: np.ndarray) -> object:
    base: object = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def _same_graph(a: StreetGraph, b: StreetGraph) -> None:
    for name in ARRAY_NAMES:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


class TestMemoryMapped:
    def test_arrays_are_read_only_views_of_one_map(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        save_graph(helsinki["walk"], tmp_path)
        graph = load_graph(tmp_path, "walk")
        _same_graph(graph, helsinki["walk"])
        bases = {id(_mapped_base(getattr(graph, name))) for name in ARRAY_NAMES}
        assert len(bases) == 1 and isinstance(_mapped_base(graph.indptr), mmap.mmap)
        for name in ARRAY_NAMES:
            array = getattr(graph, name)
            assert not array.flags.writeable and array.ctypes.data % 8 == 0, name
        with pytest.raises(ValueError, match="read-only"):
            graph.travel_time_s[0] = 0
        maps = Path("/proc/self/maps").read_text()
        assert str((tmp_path / "walk.arrays").resolve()) in maps

    def test_kernels_on_mapped_arrays_equal_the_in_memory_graph(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        built = helsinki["drive"]
        plain = StreetGraph.from_edges(
            "drive",
            np.repeat(np.arange(built.n_nodes), np.diff(built.indptr)),
            np.array(built.indices),
            np.array(built.travel_time_s),
            np.array(built.lon),
            np.array(built.lat),
        )
        save_graph(plain, tmp_path)
        mapped = load_graph(tmp_path, "drive")
        sources = np.arange(0, plain.n_nodes, max(1, plain.n_nodes // 50))
        a = k_nearest_field(plain, sources, np.arange(len(sources)), k=3, max_time_s=900.0)
        b = k_nearest_field(mapped, sources, np.arange(len(sources)), k=3, max_time_s=900.0)
        np.testing.assert_array_equal(a, b)

    def test_graph_arrays_are_read_only_but_the_callers_are_not(self) -> None:
        lon = np.array([0.0, 0.001])
        graph = StreetGraph.from_edges("walk", [0, 1], [1, 0], [1.0, 1.0], lon, [0.0, 0.0])
        assert not graph.lon.flags.writeable and lon.flags.writeable


class TestCheapChecks:
    def test_an_untouched_file_is_not_hashed_again(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        save_graph(helsinki["walk"], tmp_path)
        meta = tmp_path / "walk.json"
        m = json.loads(meta.read_text())
        m["arrays"]["sha256"] = "0" * 64  # only a rehash would notice
        meta.write_text(json.dumps(m))
        load_graph(tmp_path, "walk", warm_up=False)
        path = tmp_path / "walk.arrays"
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        with pytest.raises(GraphCacheMismatch, match="sha256"):
            load_graph(tmp_path, "walk", warm_up=False)

    def test_a_copied_directory_is_hashed_and_loads(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        save_graph(helsinki["walk"], tmp_path / "a")
        shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)
        m = json.loads((tmp_path / "b" / "walk.json").read_text())
        assert (tmp_path / "b" / "walk.arrays").stat().st_mtime_ns != m["arrays"]["mtime_ns"]
        _same_graph(load_graph(tmp_path / "b", "walk", warm_up=False), helsinki["walk"])

    def test_a_truncated_file_is_refused(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        path = save_graph(helsinki["walk"], tmp_path)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - 8)
        with pytest.raises(GraphCacheMismatch, match="bytes"):
            load_graph(tmp_path, "walk", warm_up=False)

    def test_a_bad_layout_is_refused(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        save_graph(helsinki["walk"], tmp_path)
        meta = tmp_path / "walk.json"
        m = json.loads(meta.read_text())
        m["arrays"]["layout"]["indices"]["offset"] = m["arrays"]["size"]
        meta.write_text(json.dumps(m))
        with pytest.raises(GraphCacheMismatch, match="layout"):
            load_graph(tmp_path, "walk", warm_up=False)

    def test_an_unknown_format_says_rebuild(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        save_graph(helsinki["walk"], tmp_path)
        meta = tmp_path / "walk.json"
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"format_version": 99}))
        with pytest.raises(GraphCacheMismatch, match="ern graph build"):
            load_graph(tmp_path, "walk", warm_up=False)


class TestFormat1:
    def test_an_old_directory_still_loads(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        _save_format_1(helsinki["bike"], tmp_path)
        graph = load_graph(tmp_path, "bike", warm_up=False)
        assert graph.manifest["format_version"] == 1
        _same_graph(graph, helsinki["bike"])

    def test_ensure_converts_it_without_rebuilding(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        _save_format_1(helsinki["walk"], tmp_path)
        lines: list[str] = []
        graphs = ensure_graphs(HELSINKI, tmp_path, ["walk"], progress=lines.append)
        assert graphs["walk"].manifest["format_version"] == FORMAT_VERSION == 2
        assert any("converted to format 2" in line for line in lines)
        assert not any("building" in line or "rebuilding" in line for line in lines)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.arrays", "walk.json"]
        _same_graph(graphs["walk"], helsinki["walk"])

    def test_an_old_directory_that_cannot_be_written_is_kept_and_says_why(
        self, tmp_path: Path, helsinki: dict[str, StreetGraph]
    ) -> None:
        _save_format_1(helsinki["walk"], tmp_path)
        # a directory where the new file would go: writing fails even for root
        (tmp_path / ".walk.arrays.tmp").mkdir()
        lines: list[str] = []
        graphs = ensure_graphs(HELSINKI, tmp_path, ["walk"], progress=lines.append)
        assert graphs["walk"].manifest["format_version"] == 1
        assert any("format 1 kept" in line for line in lines)
        _same_graph(graphs["walk"], helsinki["walk"])


def test_two_processes_share_the_pages(tmp_path: Path, helsinki: dict[str, StreetGraph]) -> None:
    """Two loaders of one file: its pages are counted as shared (PSS about half of RSS)."""
    save_graph(helsinki["drive"], tmp_path)
    path = str((tmp_path / "drive.arrays").resolve())
    probe = (
        "import sys, time; from pathlib import Path; from geo.graph import load_graph\n"
        "g = load_graph(Path(sys.argv[1]), 'drive', warm_up=False)\n"
        "s = sum(int(getattr(g, n).sum() != 0) for n in ('indices', 'rev_indices', 'lon'))\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", probe, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            rss = pss = 0
            lines = Path(f"/proc/{p.pid}/smaps").read_text().splitlines()
            inside = False
            for line in lines:
                if line[:1].isdigit() or (line[:1] in "abcdef" and "-" in line.split()[0]):
                    inside = line.rstrip().endswith(path)
                elif inside and line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif inside and line.startswith("Pss:"):
                    pss += int(line.split()[1])
            assert rss > 0 and pss < 0.75 * rss, (rss, pss)
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.close()
            p.wait(timeout=30)
            if p.stdout is not None:
                p.stdout.close()
