"""Compare change-point methods on the series `bench history` sees (not a pytest file).

Runs bench's choice (ruptures Binseg, bench.changepoints) beside ruptures PELT with the same
scaling and penalty, and MongoDB's E-Divisive means (signal-processing-algorithms, its
defaults p = 0.05 and 100 permutations). That package pins numpy < 2 and Python < 3.12, so
it runs in a venv of its own:

    python3 -m venv /tmp/cpvenv && /tmp/cpvenv/bin/pip install signal-processing-algorithms \
        ruptures scipy pandas pyarrow pydantic
    PYTHONPATH=. /tmp/cpvenv/bin/python benchmarks/changepoint_methods.py

docs/history.md has its output.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np
import ruptures

from bench.changepoints import MIN_SEGMENT_RUNS, PENALTY_PER_LOG_RUNS, change_points, noise_scale

SERIES = 500  # per case
NOISE = 2.0  # standard deviation of a per-run median (2 % of the level)
LEVEL = 100.0


def pelt(values: np.ndarray) -> list[int]:
    scaled = ((values - np.median(values)) / noise_scale(values)).reshape(-1, 1)
    algo = ruptures.Pelt(model="l2", min_size=MIN_SEGMENT_RUNS, jump=1).fit(scaled)
    return [int(i) for i in algo.predict(pen=PENALTY_PER_LOG_RUNS * math.log(values.size))[:-1]]


def e_divisive(values: np.ndarray) -> list[int]:
    from signal_processing_algorithms.energy_statistics.energy_statistics import (
        e_divisive as found,
    )

    return sorted(int(i) for i in found(values, pvalue=0.05, permutations=100))


METHODS: dict[str, Callable[[np.ndarray], list[int]]] = {
    "bench: ruptures Binseg": lambda v: change_points(v),
    "ruptures PELT, same penalty": pelt,
    "E-Divisive (MongoDB)": e_divisive,
}


def main() -> None:
    rng = np.random.default_rng(20261202)
    np.random.seed(20261202)  # E-Divisive's permutations use numpy's global generator
    for name, method in METHODS.items():
        cells = []
        for n in (10, 30, 100):
            alarms = sum(
                bool(method(LEVEL + NOISE * rng.standard_normal(n))) for _ in range(SERIES)
            )
            cells.append(f"noise n={n}: {alarms / SERIES:.1%} false alarms")
        for sds in (2, 3, 4):
            exact = near = extra = 0
            for _ in range(SERIES):
                values = LEVEL + NOISE * rng.standard_normal(30)
                values[20:] += sds * NOISE
                found = method(values)
                exact += 20 in found
                near += any(abs(i - 20) <= 1 for i in found)
                extra += any(abs(i - 20) > 1 for i in found)
            cells.append(
                f"step {sds} sd at run 20 of 30: {exact / SERIES:.0%} exact, "
                f"{near / SERIES:.0%} within 1, {extra / SERIES:.0%} with another"
            )
        start = time.perf_counter()
        for _ in range(3):
            method(LEVEL + NOISE * rng.standard_normal(365))
        cells.append(f"365 runs: {(time.perf_counter() - start) / 3 * 1e3:.0f} ms per series")
        print(f"{name}\n  " + "\n  ".join(cells))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
