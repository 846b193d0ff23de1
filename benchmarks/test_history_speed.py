"""`bench history` over a year of nightly runs: 365 runs x 4 runtimes x 2 workloads.

Opt-in (outside testpaths, marked slow); run with
`.venv/bin/pytest benchmarks/test_history_speed.py --benchmark-enable -s`. The store is
written by tests/storegen.py through ResultStore (about a minute); the timed part is the
whole command in a fresh process, imports included.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tests.helpers import bench
from tests.storegen import StoreSpec, write_store

pytestmark = pytest.mark.slow

MAX_SECONDS = 10.0
NIGHTS = 365
STEP_AT = 300  # podman 5 arrives and costs 8 % of throughput
FIRST_NIGHT = datetime(2025, 12, 1, 2, 17, tzinfo=UTC)


def test_history_of_a_year_four_runtimes(
    benchmark: BenchmarkFixture, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("results")
    for night in range(NIGHTS):
        later = night >= STEP_AT
        write_store(
            root,
            StoreSpec(
                run_id=f"nightly-{night:03d}",
                started_at=(FIRST_NIGHT + timedelta(days=night)).isoformat(),
                scenario_sha256="ab" * 32,
                seed=night,
                warmups=0,
                trial_duration_s=1.0,
                sample_hz=1.0,
                throughput_factor={"podman": 0.92 if later else 1.0},
                runtime_versions={"podman": "5.0.2" if later else "4.9.4"},
            ),
        )
    out = tmp_path_factory.mktemp("history")

    def build() -> float:
        start = time.perf_counter()
        done = bench("history", str(root), "--out", str(out))
        assert done.returncode == 0, done.stderr
        return time.perf_counter() - start

    elapsed = benchmark.pedantic(build, rounds=1, iterations=1)
    document = json.loads((out / "history.json").read_text())
    found = {(c["runtime"], c["metric"], c["run_id"]) for c in document["change_points"]}
    size = (out / "index.html").stat().st_size
    print(
        f"\n{NIGHTS} runs: history in {elapsed:.2f} s, index.html {size / 1024:.0f} KiB, "
        f"{len(document['series'])} series, change points {sorted(found)}"
    )
    benchmark.extra_info.update(seconds=elapsed, html_bytes=size, change_points=len(found))
    assert ("podman", "throughput", f"nightly-{STEP_AT:03d}") in found
    assert elapsed < MAX_SECONDS
