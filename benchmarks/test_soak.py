"""Soak: 200 back-to-back `/bin/true` trials across every runtime that answers, in-process.

Through bench.runner.run_scenario (as `bench run` does), after one warm-up run that pays
the one-time imports and image import. Afterwards: no container, cgroup or private
podman service of the run is left, bench has as many open file descriptors and threads
as before, and its RSS grew by less than 20 MB. The numbers go to the benchmark's
extra_info (and are printed). Opt-in: `nox -s benchmarks -- -k soak` (about 3 minutes).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.runner import RunOptions, RunOutcome, run_scenario
from benchmarks.cgroup_fixtures import require_cgroups
from tests.e2e import reliability as rel

pytestmark = pytest.mark.benchmark(group="soak")

TRIALS = 200
MAX_RSS_GROWTH_BYTES = 20 * 1024 * 1024


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_soak_200_trials(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    require_cgroups()
    runtimes = [name for name, why_not in rel.answering().items() if not why_not]
    per_runtime = TRIALS // len(runtimes)
    warm = rel.scenario_file(tmp_path, runtimes, [("true", ["/bin/true"])], repetitions=1)
    warm_outcome = run_scenario(warm, RunOptions(tmp_path / "results", run_id="soak-warm"))
    assert warm_outcome.status == "complete"

    scenario = rel.scenario_file(
        tmp_path, runtimes, [("true", ["/bin/true"])], repetitions=per_runtime
    )
    process = psutil.Process()
    fds_before, threads_before = _open_fds(), threading.active_count()
    rss_before = process.memory_info().rss
    run_id = f"soak-{os.getpid()}"
    started = time.monotonic()

    def soak() -> RunOutcome:
        return run_scenario(scenario, RunOptions(tmp_path / "results", run_id=run_id))

    outcome = benchmark.pedantic(soak, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    elapsed_s = time.monotonic() - started
    rss_growth = process.memory_info().rss - rss_before
    fds_after, threads_after = _open_fds(), threading.active_count()
    left = rel.leftovers(run_id, os.getpid())
    rel.remove_run_objects(run_id, os.getpid())

    statuses = [t.status for t in outcome.trials]
    numbers = {
        "runtimes": ",".join(runtimes),
        "trials": len(statuses),
        "seconds": round(elapsed_s, 1),
        "rss_growth_mib": round(rss_growth / 2**20, 2),
        "fds_before": fds_before,
        "fds_after": fds_after,
        "threads_before": threads_before,
        "threads_after": threads_after,
    }
    benchmark.extra_info.update(numbers)
    print(f"soak: {numbers}")
    assert outcome.status == "complete"
    assert len(statuses) == per_runtime * len(runtimes) and set(statuses) == {"ok"}
    assert not any(left.values()), left
    assert fds_after == fds_before
    assert threads_after == threads_before
    assert rss_growth < MAX_RSS_GROWTH_BYTES, numbers
