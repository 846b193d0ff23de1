"""Small-sample statistics for benchmark results: bootstrap CIs, a rank test, noise warnings.

Decision test: two-sided Mann-Whitney U (exact p-values for small samples without ties).
Why not a t-test: timings are skewed and a busy host adds heavy right tails; a rank test
needs no normality and one outlier cannot drag it. Why not a permutation test: at n=10
per side the exact U distribution *is* the permutation distribution of ranks, computed
without resampling, so it is deterministic and fast. With 10 vs 10 repetitions it
detects a 5 % shift with 2 % noise (effect size 2.5 sd) in > 99 % of runs
(tests/unit/test_stats.py measures it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

DEFAULT_SEED = 20_240_601
# median_cis works through this many groups at a time: 1,000 x 2,000 resamples is 16 MB.
_BATCH_GROUPS = 1000
DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05
# Repetitions per runtime x workload that overhead comparisons are designed for: with
# 10 vs 10 the rank test resolves a 5 % change at 2 % noise (see module docstring).
DEFAULT_REPETITIONS = 10
CV_WARN = 0.10
# Iglewicz & Hoaglin suggest a modified z-score of 3.5, but with 10 values the MAD itself
# is so uncertain that 3.5 flags 12 % of purely Gaussian groups (measured); 5.0 flags 4 %,
# and requiring the value to also sit 5 % from the median keeps only outliers that matter.
MAD_OUTLIER_Z = 5.0
OUTLIER_MIN_REL = 0.05
# A CI half-width of 2 % of the median is what a 5 % difference needs to be seen clearly.
TARGET_PRECISION = 0.02
# 1-min load average per CPU above which the host was not idle when the run began.
BUSY_LOAD_PER_CPU = 0.25

FloatArray = npt.NDArray[np.float64]


def as_array(values: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """Finite values as a 1-D float array (NaN and inf dropped)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float
    n: int

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def columns(self, name: str) -> dict[str, float]:
        """The estimate as a table's columns: `name`, `name`_low and `name`_high."""
        return {name: self.value, f"{name}_low": self.low, f"{name}_high": self.high}


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0)


def _bootstrap_medians(arr: FloatArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    idx = rng.integers(0, arr.size, size=(resamples, arr.size))
    return np.median(arr[idx], axis=1)


def median_ci(
    values: Sequence[float] | npt.ArrayLike,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """Median with a percentile-bootstrap confidence interval (reproducible: fixed seed)."""
    arr = as_array(values)
    if arr.size == 0:
        return NAN_ESTIMATE
    med = float(np.median(arr))
    if arr.size == 1:
        return Estimate(med, med, med, 1)
    boot = _bootstrap_medians(arr, resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return Estimate(med, float(low), float(high), int(arr.size))


def median_cis(
    groups: Sequence[Sequence[float] | npt.ArrayLike],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> list[Estimate]:
    """`median_ci` of many groups at once: the same percentile bootstrap and seed.

    Groups of one size share one set of resample indices; sorting each group and each index
    row makes every resampled median one gather instead of a sort (17,000 groups of 10: 2.8 s
    on a busy 2-core host, against 10 s for median_ci one by one). The medians equal
    median_ci's; the bounds differ from it only by resampling noise (other draws).
    """
    arrays = [as_array(g) for g in groups]
    out: list[Estimate] = [NAN_ESTIMATE] * len(arrays)
    tail = (1.0 - confidence) / 2.0 * 100.0
    by_size: dict[int, list[int]] = {}
    for i, arr in enumerate(arrays):
        if arr.size == 1:
            out[i] = Estimate(float(arr[0]), float(arr[0]), float(arr[0]), 1)
        elif arr.size > 1:
            by_size.setdefault(int(arr.size), []).append(i)
    # np.percentile's default (linear) interpolation, from the two ranks around each bound:
    # partitioning at four ranks is several times faster than the full sort it does.
    positions = [q / 100.0 * (resamples - 1) for q in (tail, 100.0 - tail)]
    ranks = sorted({math.floor(p) for p in positions} | {math.ceil(p) for p in positions})
    for size, members in by_size.items():
        picks = np.sort(
            np.random.default_rng(seed).integers(0, size, size=(resamples, size)), axis=1
        )
        mid = size // 2
        for start in range(0, len(members), _BATCH_GROUPS):
            chunk = members[start : start + _BATCH_GROUPS]
            values = np.sort(np.stack([arrays[i] for i in chunk]), axis=1)
            # A resample of the sorted group by sorted indices is itself sorted: its median
            # is the middle element (odd size) or the mean of the middle two (even size).
            high_mid = values[:, picks[:, mid]]
            boot = high_mid if size % 2 else (values[:, picks[:, mid - 1]] + high_mid) / 2.0
            boot = np.partition(boot, ranks, axis=1)
            bounds = [
                boot[:, math.floor(p)] * (1.0 - (p % 1.0)) + boot[:, math.ceil(p)] * (p % 1.0)
                for p in positions
            ]
            medians = np.median(values, axis=1)
            for row, i in enumerate(chunk):
                out[i] = Estimate(
                    float(medians[row]), float(bounds[0][row]), float(bounds[1][row]), size
                )
    return out


def ratio_ci(
    new: Sequence[float] | npt.ArrayLike,
    base: Sequence[float] | npt.ArrayLike,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """Ratio of medians new/base with a bootstrap CI (both samples resampled independently)."""
    a, b = as_array(new), as_array(base)
    if a.size == 0 or b.size == 0:
        return NAN_ESTIMATE
    base_med = float(np.median(b))
    if base_med == 0.0:
        return NAN_ESTIMATE
    ratio = float(np.median(a)) / base_med
    rng = np.random.default_rng(seed)
    boot_a = _bootstrap_medians(a, resamples, rng)
    boot_b = _bootstrap_medians(b, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = boot_a / boot_b
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Estimate(ratio, math.nan, math.nan, int(min(a.size, b.size)))
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return Estimate(ratio, float(low), float(high), int(min(a.size, b.size)))


@dataclass(frozen=True)
class TestResult:
    """Outcome of a two-sample test: p-value and whether it calls the samples different."""

    p_value: float
    differs: bool
    method: str = "mann-whitney-u"
    # Whether samples of these sizes can reach p < alpha at all: 3 against 3 cannot (the
    # smallest two-sided p is 2/C(6,3) = 0.1), so "not different" would say nothing there.
    decidable: bool = True

    __test__ = False  # not a pytest test class


def differs(
    new: Sequence[float] | npt.ArrayLike,
    base: Sequence[float] | npt.ArrayLike,
    *,
    alpha: float = ALPHA,
) -> TestResult:
    """Two-sided Mann-Whitney U test; `differs` when p < alpha. NaN p with < 2 values a side."""
    a, b = as_array(new), as_array(base)
    if a.size < 2 or b.size < 2:
        return TestResult(math.nan, False, decidable=False)
    decidable = smallest_p_value(a.size, b.size) < alpha
    if np.ptp(np.concatenate([a, b])) == 0.0:
        # All identical: scipy would warn and return nan.
        return TestResult(1.0, False, decidable=decidable)
    res = sps.mannwhitneyu(a, b, alternative="two-sided", method="auto")
    p = float(res.pvalue)
    return TestResult(p, p < alpha, decidable=decidable)


def smallest_p_value(n_a: int, n_b: int) -> float:
    """The smallest two-sided exact Mann-Whitney p of samples this size: every value of one
    above every value of the other, 2 of the C(n_a + n_b, n_a) orderings."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


# --- warnings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StatWarning:
    """A pyperf-style warning: the numbers behind a table may not be trustworthy."""

    kind: str  # "high-cv" | "outliers" | "too-few-repetitions" | "host-busy" | ...
    message: str
    runtime: str = ""
    workload: str = ""
    metric: str = ""
    value: float = math.nan


def coefficient_of_variation(values: Sequence[float] | npt.ArrayLike) -> float:
    """Sample standard deviation over the mean (NaN with fewer than 2 values or mean 0)."""
    arr = as_array(values)
    if arr.size < 2:
        return math.nan
    mean = float(np.mean(arr))
    return math.nan if mean == 0.0 else float(np.std(arr, ddof=1)) / abs(mean)


def mad_outliers(
    values: Sequence[float] | npt.ArrayLike,
    *,
    z: float = MAD_OUTLIER_Z,
    min_rel: float = OUTLIER_MIN_REL,
) -> npt.NDArray[np.bool_]:
    """Mask of outliers: modified z-score 0.6745*|x-median|/MAD > z and > min_rel off median."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    finite = arr[np.isfinite(arr)]
    if finite.size < 3:
        return np.zeros(arr.shape, dtype=bool)
    med = np.median(finite)
    dev = np.abs(arr - med)
    mad = np.median(np.abs(finite - med))
    with np.errstate(invalid="ignore", divide="ignore"):
        far = dev > min_rel * abs(med)
        if mad == 0.0:  # most values identical: anything meaningfully off is an outlier
            return np.asarray(far)
        return np.asarray((0.6745 * dev / mad > z) & far)


def repetitions_needed(cv: float, *, precision: float = TARGET_PRECISION) -> int:
    """Repetitions for a median CI half-width of `precision` (relative) at this CV.

    Normal approximation: half-width = 1.96 * 1.2533 * sd / sqrt(n); 1.2533 = sqrt(pi/2)
    is the median's standard-error factor relative to the mean's.
    """
    if not math.isfinite(cv) or cv <= 0.0:
        return 2
    return max(2, math.ceil((1.96 * 1.2533 * cv / precision) ** 2))


def sample_warnings(
    values: Sequence[float] | npt.ArrayLike,
    *,
    runtime: str = "",
    workload: str = "",
    metric: str = "",
) -> list[StatWarning]:
    """High CV, MAD outliers and too few repetitions for one group of repetitions."""
    arr = as_array(values)
    where = " / ".join(x for x in (runtime, workload, metric) if x)
    out: list[StatWarning] = []
    cv = coefficient_of_variation(arr)
    if math.isfinite(cv) and cv > CV_WARN:
        out.append(
            StatWarning(
                "high-cv",
                f"{where}: coefficient of variation {cv:.1%} > {CV_WARN:.0%}; the host or "
                "workload is noisy, results may be unstable",
                runtime,
                workload,
                metric,
                cv,
            )
        )
    n_out = int(mad_outliers(arr).sum())
    if n_out:
        out.append(
            StatWarning(
                "outliers",
                f"{where}: {n_out} of {arr.size} values are outliers by median absolute deviation",
                runtime,
                workload,
                metric,
                float(n_out),
            )
        )
    need = repetitions_needed(cv)
    if arr.size >= 1 and arr.size < need:
        out.append(
            StatWarning(
                "too-few-repetitions",
                f"{where}: {arr.size} repetitions for a spread of {cv:.1%}; about {need} are "
                f"needed for a ±{TARGET_PRECISION:.0%} median",
                runtime,
                workload,
                metric,
                float(need),
            )
        )
    return out


def host_busy_warning(load_1min: float | None, cpus: int | None) -> StatWarning | None:
    """Warn when the 1-min load average before the run exceeded BUSY_LOAD_PER_CPU per CPU."""
    if load_1min is None or not cpus or not math.isfinite(load_1min):
        return None
    per_cpu = load_1min / cpus
    if per_cpu <= BUSY_LOAD_PER_CPU:
        return None
    return StatWarning(
        "host-busy",
        f"host load average was {load_1min:.2f} on {cpus} CPUs before the run "
        f"({per_cpu:.2f} per CPU > {BUSY_LOAD_PER_CPU}); other work may have skewed results",
        value=load_1min,
    )
