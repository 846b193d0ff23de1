"""bench history on a real series: quick bare-metal runs of one tiny scenario, the last three
under a CPU limit imposed from outside the scenario file; the step is found at the first
limited run and annotated, and the page renders in headless Chromium."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from bench.cgroups.locate import cgroup_mounts, host_cgroup_version
from bench.cgroups.manage import BENCH_DIR
from tests.browser import WINDOW, SvgCounter, console_problems, run_chromium
from tests.helpers import bench, require, require_root

# Same file (same sha256) for every run: the limit comes from the cgroup bench's own
# cgroups are made under, so the scenario stays the same and history follows it.
SCENARIO = """\
name = "bench-e2e-history"
description = "e2e history: 1 s cpu stressor x 3 repetitions, bare metal"
runtimes = ["bare"]
repetitions = 3
warmups = 0
sample_interval_ms = 100
timeout_s = 30

[[workloads]]
name = "cpu"
stressor = "cpu"
workers = 1
duration_s = 1
options = { cpu-method = "matrixprod" }
"""
NORMAL_RUNS = 4
LIMITED_RUNS = 3
LIMIT_CPUS = 0.25
PERIOD_US = 100_000
RUN_TIMEOUT_S = 120


@contextmanager
def cpu_limit_on_bench_parent(cpus: float) -> Iterator[None]:
    """A CFS quota on the parent of bench's cgroups (v1 cpu.cfs_quota_us, v2 cpu.max), all
    removed afterwards. An empty child cgroup of ours keeps the parent from being removed
    when a trial's cgroup goes; the heavy-test lock keeps other runs out meanwhile."""
    mounts = cgroup_mounts()
    v2 = host_cgroup_version(mounts) == "v2"
    parent = (mounts["unified"] if v2 else mounts["cpu"]) / BENCH_DIR
    made_parent = not parent.exists()
    hold = parent / "bench-e2e-history-hold"
    quota_file = parent / ("cpu.max" if v2 else "cpu.cfs_quota_us")
    quota = int(cpus * PERIOD_US)
    try:
        parent.mkdir(exist_ok=True)
        hold.mkdir()
        if not v2:
            (parent / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        quota_file.write_text(f"{quota} {PERIOD_US}" if v2 else str(quota))
        yield
    finally:
        with suppress(OSError):
            quota_file.write_text(f"max {PERIOD_US}" if v2 else "-1")
        with suppress(OSError):
            hold.rmdir()
        if made_parent:
            with suppress(OSError):  # a sibling still in it keeps it
                parent.rmdir()


def _run(scenario: Path, results: Path) -> str:
    done = bench(
        "run", str(scenario), "--results-dir", str(results), "--json", timeout_s=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "complete", out
    return str(out["run_id"])


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    require_root()
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    scenario = tmp_path_factory.mktemp("bench-e2e-history") / "history.toml"
    scenario.write_text(SCENARIO)
    results = tmp_path_factory.mktemp("bench-e2e-history-results")
    ids = [_run(scenario, results) for _ in range(NORMAL_RUNS)]
    with cpu_limit_on_bench_parent(LIMIT_CPUS):
        ids += [_run(scenario, results) for _ in range(LIMITED_RUNS)]
    return results, ids


def test_cpu_limit_is_found_at_the_first_limited_run(
    series: tuple[Path, list[str]], tmp_path: Path
) -> None:
    results, ids = series
    out = tmp_path / "history"
    done = bench("history", str(results), "--out", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "history.json").read_text())
    assert [r["run_id"] for r in document["runs"]] == ids
    assert document["excluded"] == []
    steps = {
        (c["metric"], c["run_id"]): c
        for c in document["change_points"]
        if c["runtime"] == "bare" and c["workload"] == "cpu"
    }
    first_limited = ids[NORMAL_RUNS]
    step = steps[("throughput", first_limited)]
    # One worker held to a quarter of a CPU: throughput falls by roughly three quarters.
    assert step["regression"] and step["change_pct"] < -50.0, step
    assert step["previous_run_id"] == ids[NORMAL_RUNS - 1]
    # The limit is outside what manifests record, and the page says so.
    summary = (out / "history.md").read_text()
    assert f"| {first_limited} (" in summary
    if not step["changes"]:
        assert "nothing recorded changed" in summary


def test_history_page_renders_in_chromium(series: tuple[Path, list[str]], tmp_path: Path) -> None:
    results, _ = series
    out = tmp_path / "history"
    assert bench("history", str(results), "--out", str(out), "--format", "html").returncode == 0
    page = out / "index.html"
    done = run_chromium(page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_problems(done.stderr) == []
    counter = SvgCounter()
    counter.feed(done.stdout)
    assert counter.external == []  # self-contained
    # throughput, cpu_s, wall_s, mem_peak_bytes, start_s, stop_s of the cpu workload
    assert len(counter.svgs) == 6, counter.svgs
    for svg in counter.svgs:
        assert svg["paths"] >= 5 and svg["d_chars"] >= 500 and svg["texts"] >= 3, svg
    assert "throughput (bogo-ops/s)" in done.stdout
    shot = tmp_path / "history.png"
    done = run_chromium(page, tmp_path / "profile", f"--screenshot={shot}")
    assert done.returncode == 0 and console_problems(done.stderr) == []
    pixels = np.asarray(imread(shot))[..., :3]
    if pixels.dtype != np.uint8:
        pixels = np.rint(pixels * 255).astype(np.uint8)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    non_white = np.any(pixels < 245, axis=-1)
    assert 0.01 < non_white.mean() < 0.6, non_white.mean()
    # Change points in their red (#b00020): the dashed line, its label, the table cell.
    red = np.all(np.abs(pixels.astype(int) - np.array([0xB0, 0x00, 0x20])) <= 40, axis=-1)
    assert red.sum() > 50
