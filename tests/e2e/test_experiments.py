"""The shipped experiments, run for real in quick mode under every runtime."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench.analysis import (
    Run,
    footprint_table,
    isolation_table,
    load_run,
    overhead_table,
    startup_table,
)
from bench.runtimes._oci import RUNSC_PLATFORM
from tests.helpers import bench, require, require_root

ALL_RUNTIMES = ("bare", "docker", "podman", "lxc")
# overhead-startup and overhead-cpu run docker and podman under runc and under gVisor:
# their rows are labelled engine+OCI runtime.
OCI_AXIS_LABELS = (
    "bare", "docker+runc", "docker+runsc", "podman+runc", "podman+runsc", "lxc",
)  # fmt: skip
pytestmark = pytest.mark.slow


def run_shipped(name: str, results_dir: Path, runtimes: tuple[str, ...] = ALL_RUNTIMES) -> Run:
    """`bench run NAME --quick --json`, requiring every runtime to have run (none skipped)."""
    require_root()
    args = ["run", name, "--quick", "--json", "--results-dir", str(results_dir)]
    for runtime in runtimes:
        args += ["--runtime", runtime]
    done = bench(*args, timeout_s=300)
    assert "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout)
    skipped = outcome["skipped_runtimes"]
    if skipped:
        require(False, f"runtimes unavailable: {skipped}")
    return load_run(Path(outcome["run_dir"]))


def aggressors_and_victims(run: Run, runtime: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured aggressor and victim trials of one runtime (both must exist)."""
    trials = run.trials[~run.trials["warmup"] & (run.trials["runtime"] == runtime)]
    aggressors = trials[trials["role"] == "aggressor"]
    victims = trials[trials["role"] == "victim"]
    assert len(aggressors) and len(victims), runtime
    return aggressors, victims


def test_isolation_memory_aggressor_is_oom_killed_inside_its_limit_victim_ok(
    tmp_path: Path,
) -> None:
    run = run_shipped("isolation-memory", tmp_path)
    for runtime in ALL_RUNTIMES:
        aggressors, victims = aggressors_and_victims(run, runtime)
        assert (aggressors["status"] == "oom").all(), (runtime, aggressors["status"].tolist())
        assert (aggressors["oom_kills"] > 0).all()
        # The aggressor's peak never passed its own limit: the kernel held it there.
        assert (aggressors["mem_peak_bytes"] <= aggressors["mem_limit_bytes"]).all()
        assert (victims["status"] == "ok").all(), (runtime, victims["error"].tolist())
        assert (victims["oom_kills"] == 0).all()
    table = isolation_table(run)
    assert set(table["runtime"]) == set(ALL_RUNTIMES)
    assert table["limit_held"].astype(bool).all()
    assert table["aggressor_oom_killed"].astype(bool).all()


def test_isolation_fork_pids_limit_holds_and_host_unharmed(tmp_path: Path) -> None:
    run = run_shipped("isolation-fork", tmp_path)
    for runtime in ALL_RUNTIMES:
        aggressors, victims = aggressors_and_victims(run, runtime)
        # The bomb reached its ceiling (it did try) and never went past it.
        assert (aggressors["pids_peak"] <= aggressors["pids_limit"]).all()
        assert (aggressors["pids_peak"] >= aggressors["pids_limit"] // 2).all()
        assert (victims["status"] == "ok").all(), (runtime, victims["error"].tolist())
        # The host could still start a process while the bomb ran.
        assert victims["host_probe_ms"].notna().all()
        assert (victims["host_probe_ms"] < 5000).all()
    assert isolation_table(run)["limit_held"].astype(bool).all()


def test_isolation_cpu_separate_cpus_degrade_less_than_a_shared_cpu(tmp_path: Path) -> None:
    run = run_shipped("isolation-cpu", tmp_path)
    table = isolation_table(run).set_index(["runtime", "placement"])
    for runtime in ALL_RUNTIMES:
        shared = table.loc[(runtime, "shared"), "degradation_pct"]
        separate = table.loc[(runtime, "separate"), "degradation_pct"]
        assert shared > separate, (runtime, shared, separate)
        # Two busy workers beside the victim on its one CPU take a large share of it.
        assert shared > 20, (runtime, shared)


def test_overhead_startup_gives_one_latency_per_runtime_and_names_the_fastest(
    tmp_path: Path,
) -> None:
    run = run_shipped("overhead-startup", tmp_path)
    table = startup_table(run)
    assert sorted(table["runtime"]) == sorted(OCI_AXIS_LABELS)
    for _, row in table.iterrows():
        assert row["start_low_ms"] <= row["start_ms"] <= row["start_high_ms"]
        assert row["start_ms"] > 0 and math.isfinite(row["start_high_ms"])
    assert table["fastest"].sum() == 1
    fastest = table.loc[table["fastest"], "runtime"].item()
    assert table.loc[table["fastest"], "start_ms"].item() == table["start_ms"].min()
    assert fastest in OCI_AXIS_LABELS
    # The manifest says which gVisor and which platform each engine ran.
    for engine in ("docker", "podman"):
        described = run.manifest.runtimes[engine].oci_runtimes
        assert described["runsc"].startswith("runsc version"), described
        assert described["runsc"].endswith(f"platform {RUNSC_PLATFORM}"), described
    assert len(overhead_table(run)) == len(OCI_AXIS_LABELS)


def test_overhead_footprint_gives_memory_per_container_with_an_interval(tmp_path: Path) -> None:
    run = run_shipped("overhead-footprint", tmp_path, (*ALL_RUNTIMES, "podman-rootless"))
    table = footprint_table(run).set_index("runtime")
    for runtime in ("docker", "podman", "podman-rootless", "lxc"):
        row = table.loc[runtime]
        assert row["containers"] == 10
        assert row["runtime_pss_bytes"] > 0
        low, value, high = (row[f"pss_per_container{s}_bytes"] for s in ("_low", "", "_high"))
        assert low <= value <= high, (runtime, low, value, high)
        assert math.isfinite(value)


def test_overhead_cpu_same_workload_gives_the_same_throughput_within_noise(
    tmp_path: Path,
) -> None:
    """The identical image under every runtime: CPU-bound throughput within ±10 % of bare."""
    run = run_shipped("overhead-cpu", tmp_path)
    table = overhead_table(run)
    cpu = table[table["workload"] == "cpu"].set_index("runtime")
    assert sorted(cpu.index) == sorted(OCI_AXIS_LABELS)
    for runtime in OCI_AXIS_LABELS:
        row = cpu.loc[runtime]
        assert row["metric"] == "throughput" and row["median"] > 0
        # The ratio's 95 % interval must reach into [0.9, 1.1]: no runtime is off by more.
        assert row["ratio_low"] <= 1.1 and row["ratio_high"] >= 0.9, (
            runtime, row["ratio"], row["ratio_low"], row["ratio_high"],
        )  # fmt: skip
