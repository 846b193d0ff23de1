"""Latency histogram: percentiles and merges against numpy on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.errors import BenchError
from bench.latency import RELATIVE_PRECISION, STANDARD_PERCENTILES, LatencyHistogram

PERCENTILES = (1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def lognormal_latencies_s(seed: int, size: int) -> np.ndarray:
    """Service-like latencies: a 200 us body with a long tail up to tens of ms."""
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=math.log(200e-6), sigma=0.8, size=size)


def assert_matches_numpy(histogram: LatencyHistogram, values_s: np.ndarray) -> None:
    """Each percentile lies within the histogram's precision of the sample numpy picks.

    HdrHistogram ranks with round(p/100 * n) where numpy's inverted_cdf takes ceil; the
    samples one rank either side bound the difference, widened by the bucket width.
    """
    ordered = np.sort(values_s)
    found = histogram.percentiles_s(PERCENTILES)
    for p in PERCENTILES:
        exact = float(np.percentile(values_s, p, method="inverted_cdf"))
        rank = int(np.searchsorted(ordered, exact))
        low = ordered[max(rank - 1, 0)] * (1 - RELATIVE_PRECISION) - 1e-9
        high = ordered[min(rank + 1, len(ordered) - 1)] * (1 + RELATIVE_PRECISION) + 1e-9
        assert low <= found[p] <= high, (p, found[p], exact)
        assert histogram.percentile_s(p) == found[p]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_numpy_within_precision(seed: int) -> None:
    values_s = lognormal_latencies_s(seed, 50_000)
    histogram = LatencyHistogram.from_seconds(values_s)
    assert histogram.count == len(values_s)
    assert_matches_numpy(histogram, values_s)
    summary = histogram.summary()
    assert summary.min_s == pytest.approx(values_s.min(), rel=RELATIVE_PRECISION)
    assert summary.max_s == pytest.approx(values_s.max(), rel=RELATIVE_PRECISION)
    assert summary.mean_s == pytest.approx(values_s.mean(), rel=RELATIVE_PRECISION)
    assert summary.p50_s <= summary.p90_s <= summary.p99_s <= summary.p999_s <= summary.max_s


def test_merge_equals_histogram_of_all_values_and_not_averaged_percentiles() -> None:
    """Repetitions merge exactly: the merge is the histogram of the pooled requests."""
    fast = lognormal_latencies_s(10, 30_000)
    slow = lognormal_latencies_s(11, 10_000) * 8  # one repetition hit a slow period
    parts = [LatencyHistogram.from_seconds(fast), LatencyHistogram.from_seconds(slow)]
    merged = LatencyHistogram.merged(parts)
    pooled = np.concatenate([fast, slow])
    assert merged == LatencyHistogram.from_seconds(pooled)
    assert merged.count == len(pooled)
    assert_matches_numpy(merged, pooled)
    averaged_p99 = np.mean([part.percentile_s(99) for part in parts])
    assert abs(averaged_p99 - merged.percentile_s(99)) > 10 * RELATIVE_PRECISION * averaged_p99


def test_encoding_round_trips_exactly_and_is_compact() -> None:
    values_s = lognormal_latencies_s(4, 100_000)
    histogram = LatencyHistogram.from_seconds(values_s)
    text = histogram.encode()
    assert text.isascii() and "\n" not in text
    decoded = LatencyHistogram.decode(text)
    assert decoded == histogram
    assert decoded.summary() == histogram.summary()
    # 100k requests in a few kB: small enough for a column of the result store.
    assert len(text) < 8_000
    decoded.add(histogram)
    assert decoded.count == 2 * histogram.count


def test_bucket_counts_and_sub_microsecond_values() -> None:
    histogram = LatencyHistogram.from_counts_us([0, 150, 151, 20_000], [2, 5, 3, 1])
    assert histogram.count == 11
    assert histogram.percentile_s(100) == pytest.approx(0.02, rel=RELATIVE_PRECISION)
    assert histogram.percentile_s(50) == pytest.approx(150e-6, rel=RELATIVE_PRECISION)
    assert histogram.summary().min_s == pytest.approx(1e-9)  # zero µs clamps to the lowest


def test_empty_histogram_has_zero_percentiles() -> None:
    empty = LatencyHistogram()
    assert empty.count == 0
    assert set(empty.percentiles_s(STANDARD_PERCENTILES).values()) == {0.0}
    assert LatencyHistogram.decode(empty.encode()).count == 0


def test_corrupt_encoding_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="not an encoded latency histogram"):
        LatencyHistogram.decode("bm90IGEgaGlzdG9ncmFt")


def test_vectorised_bucketing_equals_recording_each_value() -> None:
    values_s = np.concatenate([lognormal_latencies_s(5, 5_000), [1e-9, 2.047e-6, 2.049e-6, 3.0]])
    one_by_one = LatencyHistogram()
    for value_s in values_s:
        one_by_one.record_ns(round(value_s * 1e9))
    assert LatencyHistogram.from_seconds(values_s) == one_by_one


@pytest.mark.parametrize("seed", [1, 2])
def test_mean_equals_hdrhistograms_own_and_the_values_mean(seed: int) -> None:
    """bench's scan of the non-empty buckets gives hdrh's get_mean_value exactly (its own
    walk is 15-20x slower), also after a decode, and the true mean within the precision."""
    rng = np.random.default_rng(seed)
    values_s = np.concatenate([rng.lognormal(np.log(200e-6), 0.6, 5000), [3e-9, 2.5]])
    histogram = LatencyHistogram.from_seconds(values_s)
    mean_s = histogram.summary().mean_s
    assert mean_s == histogram._hdr.get_mean_value() / 1e9
    assert LatencyHistogram.decode(histogram.encode()).summary().mean_s == mean_s
    assert mean_s == pytest.approx(values_s.mean(), rel=RELATIVE_PRECISION)
