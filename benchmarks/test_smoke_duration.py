"""Benchmark: `bench run smoke` under all four runtimes (target: under 90 s)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pytest_benchmark.fixture import BenchmarkFixture

SMOKE_TARGET_S = 90.0


def test_smoke_all_runtimes_under_90_s(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    def run_smoke() -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "bench", "run", "smoke", "--json",
             "--results-dir", str(tmp_path / f"r{time.monotonic_ns()}")],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        outcome: dict[str, object] = json.loads(done.stdout)
        return outcome

    outcome = benchmark.pedantic(run_smoke, rounds=1, iterations=1)
    assert not outcome["skipped_runtimes"], outcome["skipped_runtimes"]
    assert benchmark.stats.stats.max < SMOKE_TARGET_S
