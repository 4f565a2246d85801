"""Acceptance estimates, Poisson-binomial wave sizes and arrival order, against direct sums."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from geo.acceptance import (
    ARRIVAL_BAND_FACTOR,
    arrival_order,
    at_least_probabilities,
    shrunk_rates,
    wave_size,
)


def direct_at_least(p: list[float], needed: int) -> float:
    """P(at least ``needed`` successes) by enumerating every outcome (2^n terms)."""
    total = 0.0
    for outcome in itertools.product((0, 1), repeat=len(p)):
        if sum(outcome) >= needed:
            total += math.prod(q if hit else 1.0 - q for q, hit in zip(p, outcome, strict=True))
    return total


def direct_wave_size(p: list[float], needed: int, confidence: float, cap: int | None) -> int:
    limit = len(p) if cap is None else min(cap, len(p))
    for k in range(limit + 1):
        if direct_at_least(p[:k], needed) >= confidence:
            return k
    return limit


class TestPoissonBinomial:
    @pytest.mark.parametrize("seed", range(20))
    def test_matches_enumeration(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 12))
        p = rng.uniform(0.0, 1.0, n).tolist()
        for needed in range(1, n + 2):
            got = at_least_probabilities(p, needed)
            want = [direct_at_least(p[:k], needed) for k in range(n + 1)]
            np.testing.assert_allclose(got, want, atol=1e-12)

    @pytest.mark.parametrize("seed", range(30))
    def test_wave_size_is_the_smallest_confident_prefix(self, seed: int) -> None:
        rng = np.random.default_rng(100 + seed)
        n = int(rng.integers(1, 13))
        p = rng.uniform(0.1, 0.6, n).tolist()
        needed = int(rng.integers(1, 4))
        confidence = float(rng.choice([0.5, 0.8, 0.9, 0.95]))
        cap = None if seed % 3 else int(rng.integers(1, n + 1))
        got = wave_size(p, needed, confidence=confidence, cap=cap)
        assert got == direct_wave_size(p, needed, confidence, cap)

    def test_known_values(self) -> None:
        # 1 - 0.65^k >= 0.9 first at k = 6; with p = 0.9 one is enough for 0.9.
        assert wave_size([0.35] * 20, 1, confidence=0.9) == 6
        assert wave_size([0.9] * 5, 1, confidence=0.9) == 1
        assert wave_size([0.35] * 20, 1, confidence=0.9, cap=3) == 3
        # Unreachable: everyone.
        assert wave_size([0.1, 0.1], 2, confidence=0.9) == 2
        assert wave_size([], 1, confidence=0.9) == 0


class TestShrinkage:
    def test_beta_prior_weighted_mean(self) -> None:
        p = shrunk_rates([0, 5, 9], [0, 10, 10], prior_rate=0.3, prior_n=10)
        np.testing.assert_allclose(p, [0.3, (5 + 3) / 20, (9 + 3) / 20])

    def test_no_prior_uses_the_record_alone(self) -> None:
        p = shrunk_rates([0, 3], [0, 4], prior_rate=0.3, prior_n=0)
        np.testing.assert_allclose(p, [0.3, 0.75])


class TestArrivalOrder:
    def test_equal_probabilities_keep_eta_order(self) -> None:
        eta = [300.0, 120.0, 200.0, 500.0]
        assert arrival_order(eta, [0.35] * 4).tolist() == [1, 2, 0, 3]

    def test_a_much_likelier_member_goes_first_only_when_the_difference_is_large(self) -> None:
        # 200/0.6 = 333 vs 180/0.1 = 1800: bands apart, the farther but likely member first.
        assert arrival_order([180.0, 200.0], [0.1, 0.6]).tolist() == [1, 0]
        # 200/0.35 = 571 vs 180/0.3 = 600: the same band, ETA decides.
        band = [math.floor(math.log(x) / math.log(ARRIVAL_BAND_FACTOR)) for x in (571.4, 600)]
        assert band[0] == band[1]
        assert arrival_order([180.0, 200.0], [0.3, 0.35]).tolist() == [0, 1]
