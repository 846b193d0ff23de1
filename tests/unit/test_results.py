"""The result store's files read back with pandas: types, missing values, resumed samples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.cgroups.model import CgroupSnapshot, CoreSnapshot
from bench.results import SAMPLES, TRIALS, Manifest, ScenarioRef, TrialResult
from bench.sampler import SampleColumns
from bench.store import ResultStore


def trial(trial_id: str, **values: object) -> TrialResult:
    return TrialResult(
        trial_id=trial_id,
        runtime="bare",
        oci_runtime="",
        workload="cpu",
        role="solo",
        group_id=trial_id,
        repetition=0,
        warmup=False,
        status="ok",
        **values,  # type: ignore[arg-type]
    )


def columns(rows: int, cpu_ns_step: int) -> SampleColumns:
    """`rows` samples: full ones at the ends, core-only ones between (as the sampler does)."""
    out = SampleColumns(t0=0.0)
    for i in range(rows):
        cpu_ns = i * cpu_ns_step
        if i in (0, rows - 1):
            values = dict.fromkeys(CgroupSnapshot.__slots__, 7)
            values.update(cpu_usage_ns=cpu_ns, mem_peak_bytes=None, cpu_pressure_some_us=None)
            out.append(i * 0.1, CgroupSnapshot(**values))
        else:
            out.append(i * 0.1, CoreSnapshot(cpu_ns, 4096, 1))
    return out


def test_samples_read_back_as_nullable_ints(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.add_trial(trial("t1", exit_code=0, cpu_s=1.5), columns(5, 1000))
    store.finish()
    samples = pd.read_parquet(tmp_path / "run" / SAMPLES)
    assert list(samples["trial_id"]) == ["t1"] * 5
    assert samples["t_s"].tolist() == [0.0, 0.1, 0.2, 0.30000000000000004, 0.4]
    assert samples["cpu_usage_ns"].dtype == "Int64"
    assert samples["cpu_usage_ns"].tolist() == [0, 1000, 2000, 3000, 4000]
    # Core rows leave the detail metrics missing; full rows keep the kernel's None missing.
    assert samples["mem_anon_bytes"].isna().tolist() == [False, True, True, True, False]
    assert samples["mem_peak_bytes"].isna().all()
    assert samples["mem_current_bytes"].tolist() == [7, 4096, 4096, 4096, 7]


def test_trials_keep_types_when_values_are_missing(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.add_trial(trial("t1", exit_code=None, error="no exit"), None)
    store.add_trial(trial("t2", exit_code=3, mem_peak_bytes=2**40), None)
    trials = pd.read_parquet(tmp_path / "run" / TRIALS)
    assert trials["exit_code"].dtype == "Int64"
    assert trials["exit_code"].isna().tolist() == [True, False]
    assert trials["mem_peak_bytes"].tolist()[1] == 2**40
    assert trials["throughput"].dtype == "float64"  # every value missing, still a float
    assert trials["warmup"].dtype == bool
    assert trials["error"].tolist() == ["no exit", ""]


def test_resumed_run_replaces_only_redone_trials_samples(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.write_manifest(
        Manifest("run", "incomplete", ScenarioRef("s", "s.toml", "0"), "2026-11-29T00:00:00Z")
    )
    store.add_trial(trial("t1"), columns(3, 1))
    store.add_trial(trial("t2"), columns(3, 1))
    store.finish()
    resumed = ResultStore(tmp_path / "run", resume=True)
    assert [t.trial_id for t in resumed.trials] == ["t1", "t2"]
    resumed.add_trial(trial("t2"), columns(4, 100))
    resumed.finish()
    samples = pd.read_parquet(tmp_path / "run" / SAMPLES)
    assert samples.groupby("trial_id").size().to_dict() == {"t1": 3, "t2": 4}
    assert samples[samples["trial_id"] == "t2"]["cpu_usage_ns"].max() == 300
