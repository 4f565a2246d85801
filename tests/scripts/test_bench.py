"""scripts/bench.py keeps its JSON contract and its baselines pick the same members as ern."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from geo.graph import build_graphs, save_graph
from tests.paths import REPO, extract

BENCH = REPO / "scripts" / "bench.py"
RANK_KEYS = {
    "p50_ms",
    "p99_ms",
    "networkx_p50_ms",
    "scipy_p50_ms",
    "speedup_vs_networkx",
    "mass_p99_ms",
    "members",
    "nodes",
}


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ern_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monaco_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench_graphs") / "monaco"
    for graph in build_graphs(extract("monaco_2016"), ["walk", "drive"]).values():
        save_graph(graph, out)
    return out


@pytest.fixture(scope="module")
def quick_result(monaco_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--quick", "--silent", "--graph", str(monaco_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


@pytest.mark.slow
class TestQuickRunContract:
    def test_rank_section_has_every_contract_key_per_mode(
        self, quick_result: dict[str, Any]
    ) -> None:
        for mode in ("walk", "drive"):
            rank = quick_result["rank"][mode]
            assert set(rank) >= RANK_KEYS
            for key in RANK_KEYS:
                value = rank[key]
                assert isinstance(value, int | float) and not isinstance(value, bool)
                assert math.isfinite(value) and value > 0, (mode, key, value)

    def test_counts_describe_the_graph_and_members_used(
        self, quick_result: dict[str, Any], monaco_dir: Path
    ) -> None:
        for mode in ("walk", "drive"):
            manifest = json.loads((monaco_dir / f"{mode}.json").read_text())
            assert quick_result["rank"][mode]["nodes"] == manifest["counts"]["nodes"]
            assert quick_result["rank"][mode]["members"] == 10_000
            assert set(quick_result["rank"][mode]["by_members"]) == {"1000", "10000"}

    def test_ern_agrees_with_networkx_and_scipy(self, quick_result: dict[str, Any]) -> None:
        for mode in ("walk", "drive"):
            for n, row in quick_result["rank"][mode]["by_members"].items():
                assert row["agree_with_baselines"], (mode, n, row["mismatch_examples"])

    def test_other_sections_are_measured(self, quick_result: dict[str, Any]) -> None:
        for mode in ("walk", "drive"):
            assert quick_result["graph"]["modes"][mode]["load_s"] > 0
            assert quick_result["snap"][mode]["points"] == 10_000
            assert quick_result["snap"][mode]["points_per_s"] > 0
            assert quick_result["rank"][mode]["field"]["p50_ms"] > 0
        assert quick_result["machine"]["python"] == ".".join(map(str, sys.version_info[:3]))
        assert quick_result["e2e"]["status"] == "skipped"
        assert quick_result["quick"] is True
        numbers = _numbers(quick_result)
        assert numbers and all(math.isfinite(x) for x in numbers)


class TestBaselinePick:
    def test_pick_matches_a_brute_force_best_anchor_per_member(self) -> None:
        from geo.route import AnchorIndex

        bench = _load_bench()
        rng = np.random.default_rng(3)
        n_nodes, n_anchors = 400, 3000
        member = rng.integers(0, 250, n_anchors)
        node = rng.integers(0, n_nodes, n_anchors)
        offset = rng.uniform(0, 30, n_anchors)
        index = AnchorIndex.build(n_nodes, member, node, offset_s=offset)
        for _ in range(20):
            dist = rng.uniform(0, 1200, n_nodes)
            dist[rng.random(n_nodes) < 0.3] = np.inf
            got_m, got_e = bench._pick(dist, index, 10, 900.0)
            eta = dist[node] + offset
            best = np.full(250, np.inf)
            np.minimum.at(best, member, eta)
            order = np.argsort(best, kind="stable")[:10]
            want = best[order][best[order] <= 900.0]
            np.testing.assert_allclose(got_e, want)
            np.testing.assert_allclose(best[got_m], got_e)


class TestBuddiesSection:
    def test_runs_alone_and_reports_phases_and_baselines(self, monaco_dir: Path) -> None:
        done = subprocess.run(
            [
                sys.executable,
                str(BENCH),
                "--buddies",
                "--buddies-members",
                "200",
                "--json",
                "--silent",
                "--graph",
                str(monaco_dir),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        r = json.loads(done.stdout)
        assert set(r["timings_s"]) >= {"map_matching_s", "similarity_s", "partition_s"}
        q = r["quality"]
        assert q["mean_shared_minutes"] > q["random_baseline"]
        assert q["mean_shared_minutes"] > q["locality_baseline"]
        assert r["members"] == 200 and r["groups"] > 0
        assert r["peak_rss_mb"] > 50
