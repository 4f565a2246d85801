"""Buddy similarity on a small dense graph: bounded memory, exact where it is not truncated."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from geo import buddies
from geo.graph import StreetGraph, save_graph
from tests.geo.test_buddies import Population, _population

REPO = Path(__file__).resolve().parents[2]
# Before the chunked similarity, 3,000 commuters on the 2,459-node Helsinki walk graph took
# 46 s and 1.5 GB above the inputs in the similarity alone (10,000 went past 7 GB). Chunked,
# the links kept are O(members x max_links) = 3,000 x 200 (~30 MB with the shared minutes)
# and one chunk's route pairs stay near PAIR_BUDGET (~100 MB): 400 MB leaves room for the
# partition and allocator slack, and is well under the old figure.
DENSE_MEMBERS = 3_000
PEAK_BOUND_MB = 400

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from geo import buddies
    from geo.graph import load_graphs
    from tests.geo.test_buddies import _population

    graph = load_graphs(Path(sys.argv[1]))["walk"]
    pop = _population(graph, n_background=int(sys.argv[2]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = buddies.propose(pop.graph, pop.snapper, **pop.kwargs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "delta_mb": (peak - before) / 1024,
        "groups": p.groups,
        "unplaced": p.unplaced,
        "planted": pop.planted,
        "n_members": pop.kwargs["n_members"],
        "quality": [p.quality.mean_shared_minutes, p.quality.random_baseline,
                    p.quality.locality_baseline],
    }))
    """
)


@pytest.fixture(scope="module")
def helsinki_walk_dir(
    helsinki: dict[str, StreetGraph], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    d = tmp_path_factory.mktemp("helsinki_walk")
    save_graph(helsinki["walk"], d)
    return d


@pytest.mark.slow
def test_dense_helsinki_proposal_stays_within_memory_and_keeps_guarantees(
    helsinki_walk_dir: Path,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(helsinki_walk_dir), str(DENSE_MEMBERS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["delta_mb"] < PEAK_BOUND_MB, r["delta_mb"]
    groups = r["groups"]
    sizes = [len(g) for g in groups]
    assert max(sizes) <= buddies.DEFAULT_MAX_SIZE and min(sizes) >= 2
    placed = [m for g in groups for m in g]
    assert len(placed) == len(set(placed))
    assert set(placed).isdisjoint(r["unplaced"])
    assert len(placed) + len(r["unplaced"]) == r["n_members"]
    label = {m: gi for gi, g in enumerate(groups) for m in g}
    for name, ms in r["planted"].items():
        assert len({label.get(m) for m in ms}) == 1 and ms[0] in label, name
    mean, rand, local = r["quality"]
    assert mean > 2 * local and mean > 5 * rand


@pytest.fixture(scope="module")
def dense(helsinki: dict[str, StreetGraph]) -> tuple[Population, buddies.Matching, np.ndarray]:
    pop = _population(helsinki["walk"], n_background=600)
    m = buddies.match_routes(pop.graph, pop.snapper, pop.kwargs["route_lines"])
    return pop, m, np.arange(pop.kwargs["n_members"])


def _sim(dense: tuple[Population, buddies.Matching, np.ndarray], **kw: int) -> buddies.Similarity:
    pop, m, _ = dense
    k = pop.kwargs
    return buddies.similarity(
        m,
        k["route_member"],
        k["route_days"],
        k["route_start_s"],
        k["route_end_s"],
        k["n_members"],
        **kw,  # type: ignore[arg-type]
    )


def test_chunks_do_not_change_the_similarity(
    dense: tuple[Population, buddies.Matching, np.ndarray],
) -> None:
    whole = _sim(dense, max_links=10**6, pair_budget=10**12)
    tiny = _sim(dense, max_links=10**6, pair_budget=1)
    assert whole.weight.nnz > 0
    assert abs(whole.weight - tiny.weight).max() < 1e-12
    assert abs(whole.shared_minutes - tiny.shared_minutes).max() < 1e-9
    assert (whole.weight != whole.weight.T).nnz == 0


def test_each_member_keeps_its_strongest_links_exactly(
    dense: tuple[Population, buddies.Matching, np.ndarray],
) -> None:
    k = 5
    whole = _sim(dense, max_links=10**6).weight.tocsr()
    cut = _sim(dense, max_links=k, pair_budget=5_000).weight.tocsr()
    assert cut.nnz < whole.nnz
    # every kept link has its full weight; each member keeps its k strongest
    c = cut.tocoo()
    assert np.allclose(np.asarray(whole[c.row, c.col]).ravel(), c.data)
    for m in range(whole.shape[0]):
        row = whole.getrow(m)
        if row.nnz == 0:
            continue
        kth = np.sort(row.data)[::-1][: min(k, row.nnz)][-1]
        strong = row.indices[row.data > kth]
        assert np.all(np.asarray(cut[m, strong].todense()).ravel() > 0), m
    assert (cut != cut.T).nnz == 0


def test_shared_within_is_exact_for_any_grouping(
    dense: tuple[Population, buddies.Matching, np.ndarray],
) -> None:
    _, _, members = dense
    full = _sim(dense, max_links=10**6).shared_minutes
    cut = _sim(dense, max_links=2)
    rng = np.random.default_rng(0)
    groups = [g.tolist() for g in np.array_split(rng.permutation(members), len(members) // 8)]
    within = cut.shared_within(groups)
    assert buddies.mean_shared_minutes(within, groups) == pytest.approx(
        buddies.mean_shared_minutes(full, groups)
    )
    assert buddies.mean_shared_minutes(cut.shared_minutes, groups) < buddies.mean_shared_minutes(
        full, groups
    )
    assert buddies.shared_minutes_per_group(within, groups) == pytest.approx(
        buddies.shared_minutes_per_group(full, groups)
    )
