"""Latency histograms: HdrHistogram counts in nanoseconds, exact merges, a compact text form."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from bench.errors import BenchError

# numpy is imported inside the functions that use it: service trials import this module, and
# under the cgroup v2 test VM's emulated CPU importing numpy dies (Illegal instruction).
if TYPE_CHECKING:
    import numpy as np

# 1 ns to 1 hour at 3 significant figures: every value is kept within 1/1024 of itself
# (HdrHistogram's sub-bucket width at 3 digits is 2048 counts per power of two).
LOWEST_NS = 1
HIGHEST_NS = 3_600 * 10**9
SIGNIFICANT_FIGURES = 3
RELATIVE_PRECISION = 1.0 / 1024
NS_PER_S = 1e9
NS_PER_US = 1_000
STANDARD_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True)
class LatencySummary:
    """The percentiles a report prints, in seconds, and how many requests they describe."""

    count: int
    min_s: float
    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    p999_s: float
    max_s: float


def _bucket_floor_ns(values_ns: np.ndarray) -> np.ndarray:
    """Each value rounded down to its bucket's lowest value, so that a million requests cost
    one record call per bucket (at most ~32k) instead of one per request."""
    import numpy as np

    clipped = np.clip(values_ns, LOWEST_NS, HIGHEST_NS)
    # Below 2048 ns every nanosecond has its own bucket; each power of two above halves that.
    shift = np.maximum(0, np.floor(np.log2(clipped)).astype(np.int64) - 10)
    return np.asarray((clipped >> shift) << shift)


class LatencyHistogram:
    """Request latencies as HdrHistogram counts; percentiles in seconds."""

    def __init__(self, hdr: Any | None = None) -> None:
        self._hdr: Any = hdr or HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)

    @classmethod
    def from_seconds(cls, values_s: Iterable[float] | np.ndarray) -> LatencyHistogram:
        """Every value one request (seconds)."""
        import numpy as np

        values_ns = np.rint(np.asarray(values_s, dtype=np.float64) * NS_PER_S).astype(np.int64)
        return cls.from_counts_ns(*np.unique(_bucket_floor_ns(values_ns), return_counts=True))

    @classmethod
    def from_counts_us(cls, values_us: Sequence[float], counts: Sequence[int]) -> LatencyHistogram:
        """A generator's own buckets: `counts[i]` requests took `values_us[i]` microseconds."""
        import numpy as np

        values_ns = np.rint(np.asarray(values_us, dtype=np.float64) * NS_PER_US).astype(np.int64)
        return cls.from_counts_ns(values_ns, np.asarray(counts, dtype=np.int64))

    @classmethod
    def from_counts_ns(cls, values_ns: np.ndarray, counts: np.ndarray) -> LatencyHistogram:
        histogram = cls()
        for value_ns, count in zip(values_ns.tolist(), counts.tolist(), strict=True):
            histogram.record_ns(value_ns, count)
        return histogram

    def record_ns(self, value_ns: int, count: int = 1) -> None:
        if count <= 0:
            return
        if not LOWEST_NS <= value_ns <= HIGHEST_NS:
            # A zero from a generator's microsecond clock is a sub-microsecond reply.
            value_ns = min(max(value_ns, LOWEST_NS), HIGHEST_NS)
        if not self._hdr.record_value(value_ns, count):
            raise BenchError(f"latency {value_ns} ns could not be recorded")

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count())

    def percentile_s(self, percentile: float) -> float:
        """The value at `percentile` (0-100): within RELATIVE_PRECISION of the exact one."""
        return float(self._hdr.get_value_at_percentile(percentile)) / NS_PER_S

    def percentiles_s(self, percentiles: Sequence[float]) -> dict[float, float]:
        """Several percentiles in one pass over the counts; all 0.0 when nothing was recorded."""
        found = self._hdr.get_percentile_to_value_dict(list(percentiles))
        return {p: float(found.get(p, 0)) / NS_PER_S for p in percentiles}

    def summary(self) -> LatencySummary:
        found = self.percentiles_s(STANDARD_PERCENTILES)
        p50, p90, p99, p999 = (found[p] for p in STANDARD_PERCENTILES)
        empty = self.count == 0
        return LatencySummary(
            count=self.count,
            min_s=0.0 if empty else float(self._hdr.get_min_value()) / NS_PER_S,
            mean_s=0.0 if empty else self._mean_ns() / NS_PER_S,
            p50_s=p50,
            p90_s=p90,
            p99_s=p99,
            p999_s=p999,
            max_s=float(self._hdr.get_max_value()) / NS_PER_S,
        )

    def _mean_ns(self) -> float:
        """HdrHistogram's mean (each bucket at its middle value) over non-empty buckets only.

        hdrh's get_mean_value walks every sub-bucket up to the largest value in Python: 0.54 s
        per trial's histogram here, against about 5 ms for this scan of the counts.
        """
        hdr = self._hdr
        counts = hdr.counts
        limit = min(hdr.counts_len, hdr.encoder.payload.counts_len)
        total = 0
        for index in range(limit):
            count = counts[index]
            if count:
                total += count * hdr._hdr_median_equiv_value(hdr.get_value_from_index(index))
        return float(total) / float(hdr.get_total_count())

    def add(self, other: LatencyHistogram) -> None:
        """Add `other`'s counts to this one: exact, since both share one bucket layout."""
        self._hdr.add(other._hdr)

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
        """One histogram holding every request of `histograms` (repetitions of a trial)."""
        total = cls()
        for histogram in histograms:
            total.add(histogram)
        return total

    def encode(self) -> str:
        """HdrHistogram's compressed V2 encoding in base64: what the result store keeps."""
        encoded = self._hdr.encode()
        return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)

    @classmethod
    def decode(cls, text: str) -> LatencyHistogram:
        """The inverse of `encode`; a corrupt text raises BenchError."""
        try:
            hdr = HdrHistogram.decode(text.encode("ascii"))
        except Exception as exc:  # hdrh raises zlib, base64 and its own cookie errors
            raise BenchError(f"not an encoded latency histogram: {exc}") from exc
        histogram = cls(hdr)
        if hdr.get_total_count() == 0:
            return histogram
        # Decoding keeps the encoder's layout; re-add into the standard one so merges stay exact.
        standard = cls()
        standard.add(histogram)
        return standard

    def counts_ns(self) -> tuple[np.ndarray, np.ndarray]:
        """Every non-empty bucket: its value (ns, the bucket's lowest) and its count."""
        import numpy as np

        values: list[int] = []
        counts: list[int] = []
        for item in self._hdr.get_recorded_iterator():
            values.append(int(item.value_iterated_to))
            counts.append(int(item.count_at_value_iterated_to))
        return np.asarray(values, dtype=np.int64), np.asarray(counts, dtype=np.int64)

    def __eq__(self, other: object) -> bool:
        import numpy as np

        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        mine, theirs = self.counts_ns(), other.counts_ns()
        return bool(np.array_equal(mine[0], theirs[0]) and np.array_equal(mine[1], theirs[1]))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, p50_s={self.percentile_s(50):.6g})"
