"""Statistics on simulated samples with known effects: power, false positives, CIs, warnings."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from bench import stats

# The test decision is cheap, so many simulations keep the A/A rate's own sampling error
# (sd 0.3 % at 5000) well below the 5 % bound; bootstrap CIs are dearer: fewer of them.
TEST_SIMULATIONS = 5000
CI_SIMULATIONS = 400


def _simulate(
    effect: float, noise: float, n: int, seed: int, sims: int = TEST_SIMULATIONS
) -> tuple[float, float]:
    """Fraction of simulations called different, and of CIs containing the true ratio."""
    rng = np.random.default_rng(seed)
    hits = covered = 0
    for i in range(sims):
        base = 100.0 * (1 + noise * rng.standard_normal(n))
        new = 100.0 * (1 - effect) * (1 + noise * rng.standard_normal(n))
        hits += stats.differs(new, base).differs
        if i < CI_SIMULATIONS:
            covered += stats.ratio_ci(new, base, resamples=500).contains(1 - effect)
    return hits / sims, covered / min(sims, CI_SIMULATIONS)


def test_detects_5pct_slowdown_with_2pct_noise_at_default_repetitions() -> None:
    start = time.perf_counter()
    power, coverage = _simulate(0.05, 0.02, stats.DEFAULT_REPETITIONS, seed=1)
    elapsed = time.perf_counter() - start
    print(f"power={power:.3f} ratio-CI coverage={coverage:.3f} in {elapsed:.1f}s")
    assert power >= 0.80
    # Percentile bootstrap of a median at n=10 is a little narrow; 85 % is the floor we accept.
    assert coverage >= 0.85


def test_aa_comparison_false_positive_rate() -> None:
    false_pos, coverage = _simulate(0.0, 0.02, stats.DEFAULT_REPETITIONS, seed=2)
    print(f"A/A false positives={false_pos:.3f} coverage={coverage:.3f}")
    assert false_pos <= 0.05
    assert coverage >= 0.85


def test_power_drops_with_too_few_repetitions() -> None:
    # Sanity of the simulation itself: 3 vs 3 cannot reach p < 0.05 with a rank test.
    power, _ = _simulate(0.05, 0.02, 3, seed=3, sims=300)
    assert power == 0.0


def test_median_ci_contains_median_and_is_reproducible() -> None:
    values = np.random.default_rng(5).normal(50, 5, 30)
    a = stats.median_ci(values)
    b = stats.median_ci(values)
    assert a == b
    assert a.low <= a.value <= a.high
    assert a.value == pytest.approx(float(np.median(values)))
    assert a.n == 30


def test_median_ci_edge_cases() -> None:
    assert math.isnan(stats.median_ci([]).value)
    one = stats.median_ci([3.0])
    assert (one.value, one.low, one.high, one.n) == (3.0, 3.0, 3.0, 1)
    assert stats.median_ci([1.0, float("nan"), 3.0]).n == 2


def test_ratio_ci_zero_base_is_nan() -> None:
    assert math.isnan(stats.ratio_ci([1.0, 2.0], [0.0, 0.0]).value)


def test_differs_identical_and_tiny_samples() -> None:
    assert stats.differs([1.0] * 5, [1.0] * 5) == stats.TestResult(1.0, False)
    assert math.isnan(stats.differs([1.0], [2.0, 3.0]).p_value)


def test_samples_too_small_to_tell_are_undecidable_not_the_same() -> None:
    """3 against 3 cannot reach p < 0.05 however far apart (smallest p 0.1, scipy agrees);
    4 against 4 can (2/70)."""
    apart = stats.differs([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    assert apart.p_value == pytest.approx(stats.smallest_p_value(3, 3)) == pytest.approx(0.1)
    assert not apart.differs and not apart.decidable
    wider = stats.differs([10.0, 11.0, 12.0, 13.0], [1.0, 2.0, 3.0, 4.0])
    assert wider.p_value == pytest.approx(2 / 70) and wider.differs and wider.decidable
    assert not stats.differs([1.0], [2.0, 3.0]).decidable


def test_mad_outliers_finds_injected_outlier() -> None:
    values = np.array([10.0, 10.1, 9.9, 10.05, 9.95, 10.02, 30.0])
    mask = stats.mad_outliers(values)
    assert mask.tolist() == [False] * 6 + [True]


def test_sample_warnings() -> None:
    rng = np.random.default_rng(9)
    quiet = 100 * (1 + 0.01 * rng.standard_normal(10))
    assert stats.sample_warnings(quiet) == []
    noisy = 100 * (1 + 0.2 * rng.standard_normal(10))
    kinds = {w.kind for w in stats.sample_warnings(noisy, runtime="docker")}
    assert {"high-cv", "too-few-repetitions"} <= kinds
    with_outlier = np.append(quiet, 200.0)
    assert "outliers" in {w.kind for w in stats.sample_warnings(with_outlier)}


def test_repetitions_needed() -> None:
    assert stats.repetitions_needed(0.02) <= stats.DEFAULT_REPETITIONS
    assert stats.repetitions_needed(0.05) > 30


def test_host_busy_warning() -> None:
    assert stats.host_busy_warning(0.1, 2) is None
    assert stats.host_busy_warning(None, 2) is None
    warning = stats.host_busy_warning(1.5, 2)
    assert warning is not None and warning.kind == "host-busy"


def test_mad_outliers_rarely_flags_gaussian_noise() -> None:
    rng = np.random.default_rng(11)
    groups = 2000
    flagged = sum(bool(stats.mad_outliers(rng.normal(100, 2, 10)).any()) for _ in range(groups))
    print(f"gaussian groups with a flagged outlier: {flagged / groups:.3f}")
    assert flagged / groups < 0.05
