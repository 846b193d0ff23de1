"""Benchmark: every shipped scenario, full size, under all four runtimes (≤ 10 min each).

Opt-in and long (about 40 minutes for all eight): `nox -s benchmarks -- -k full_run`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.scenario_load import shipped_scenarios
from tests.hostservers import server_dir

FULL_RUN_TARGET_S = 600.0
SCENARIOS = [name for name, _ in shipped_scenarios() if name != "smoke"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_full_run_under_10_minutes(benchmark: BenchmarkFixture, name: str) -> None:
    def run(results_dir: Path) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "bench", "run", name, "--json",
             "--results-dir", str(results_dir)],
            capture_output=True, text=True, timeout=2 * FULL_RUN_TARGET_S, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        outcome: dict[str, object] = json.loads(done.stdout)
        return outcome

    # A results directory nobody, whom the servers run as, can reach.
    with server_dir("bench-full-run-") as results_dir:
        outcome = benchmark.pedantic(run, args=(results_dir,), rounds=1, iterations=1)
    benchmark.extra_info["trials"] = outcome["trials"]
    assert not outcome["skipped_runtimes"], outcome["skipped_runtimes"]
    assert benchmark.stats.stats.max < FULL_RUN_TARGET_S
