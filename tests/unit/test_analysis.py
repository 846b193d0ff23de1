"""Analysis on synthetic result stores with injected effects (tests/storegen.py)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench import analysis
from bench.errors import InputError
from tests.storegen import IsolationCase, MiB, StoreSpec, build, write_store


def fast(**kwargs: Any) -> StoreSpec:
    """A spec with short, sparse samples: the tables only need trials."""
    return StoreSpec(**{"trial_duration_s": 1.0, "sample_hz": 5.0, **kwargs})


def test_load_run_round_trip(tmp_path: Path) -> None:
    spec = fast(failed=1)
    manifest, results = build(spec)
    run = analysis.load_run(write_store(tmp_path, spec))
    assert run.run_id == spec.run_id
    assert run.manifest == manifest
    assert len(run.trials) == len(results)
    assert len(run.samples) == sum(len(samples) for _, samples in results if samples)
    assert list(run.trials["trial_id"]) == [trial.trial_id for trial, _ in results]
    throughput = [np.nan if t.throughput is None else t.throughput for t, _ in results]
    np.testing.assert_allclose(
        run.trials["throughput"].to_numpy(float, na_value=np.nan), throughput
    )
    assert (run.trials["run_id"] == spec.run_id).all()
    # Warm-ups are kept but flagged, failed trials are not usable.
    assert run.trials["warmup"].sum() == spec.warmups * len(spec.runtimes) * len(spec.workloads)
    assert not run.trials.loc[run.trials["warmup"], "usable"].any()
    assert not run.trials.loc[run.trials["status"] != "ok", "usable"].any()


def test_load_run_tolerates_missing_optional_columns(tmp_path: Path) -> None:
    spec = StoreSpec(omit_columns=("oci_runtime", "group_id", "runtime_rss_bytes", "placement"))
    run = analysis.load_run(write_store(tmp_path, spec))
    assert (run.trials["group_id"] == run.trials["trial_id"]).all()
    assert run.trials["runtime_rss_bytes"].isna().all()
    assert len(analysis.overhead_table(run)) == len(spec.runtimes) * len(spec.workloads)


def test_load_run_without_samples(tmp_path: Path) -> None:
    run_dir = write_store(tmp_path, fast())
    (run_dir / "samples.parquet").unlink()
    run = analysis.load_run(run_dir)
    assert run.samples.empty
    assert len(analysis.overhead_table(run)) == 8


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"manifest\.json is missing"):
        analysis.load_run(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match=r"manifest\.json is not valid JSON"):
        analysis.load_run(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"run_id": "x"}))
    with pytest.raises(InputError, match=r"manifest\.json, field 'status': Field required"):
        analysis.load_run(tmp_path)


def test_load_run_names_the_damaged_file_and_field(tmp_path: Path) -> None:
    run_dir = write_store(tmp_path, fast())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["host"]["cpus"] = "two"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"manifest\.json, field 'host\.cpus': Input should"):
        analysis.load_run(run_dir)

    run_dir = write_store(tmp_path, fast(run_id="columns"))
    pd.DataFrame({"trial_id": ["a"]}).to_parquet(run_dir / "trials.parquet")
    with pytest.raises(
        InputError, match=r"trials\.parquet lacks required column\(s\) runtime, workload"
    ):
        analysis.load_run(run_dir)
    pd.DataFrame(
        {"trial_id": ["a"], "runtime": ["bare"], "workload": ["cpu"], "wall_s": ["x"]}
    ).to_parquet(run_dir / "trials.parquet")
    with pytest.raises(
        InputError, match=r"trials\.parquet: column 'wall_s' holds .*string, bench writes double"
    ):
        analysis.load_run(run_dir)

    for name in ("trials.parquet", "samples.parquet"):
        run_dir = write_store(tmp_path, fast(run_id=f"cut-{name}"))
        data = (run_dir / name).read_bytes()
        (run_dir / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(
            InputError, match=re.escape(f"{run_dir / name} is not a readable Parquet table")
        ):
            analysis.load_run(run_dir)


def test_load_runs_concatenates(tmp_path: Path) -> None:
    a = write_store(tmp_path, fast(run_id="run-a"))
    b = write_store(tmp_path, fast(run_id="run-b", seed=1))
    both = analysis.load_runs([a, b])
    assert set(both.trials["run_id"]) == {"run-a", "run-b"}
    assert both.run_ids == ["run-a", "run-b"]
    assert len(both.trials) == 2 * len(analysis.load_run(a).trials)
    table = analysis.overhead_table(both)
    assert (table["n"] == 20).all()  # repetitions of both runs pooled
    with pytest.raises(InputError, match="twice"):
        analysis.load_runs([a, a])


def test_overhead_ratio_ci_contains_injected_ratio(tmp_path: Path) -> None:
    factors = {"docker": 0.95, "podman": 0.90, "lxc": 1.0}
    hits = total = 0
    for seed in range(12):
        spec = fast(
            run_id=f"run-{seed}",
            seed=seed,
            throughput_factor=factors,
            mem_extra_bytes={"docker": 8 * MiB},
            failed=1,
        )
        table = analysis.overhead_table(analysis.load_run(write_store(tmp_path, spec)))
        for row in table[table["runtime"] != "bare"].itertuples():
            total += 1
            hits += row.ratio_low <= factors[row.runtime] <= row.ratio_high
    print(f"ratio CI covered the injected ratio in {hits}/{total}")
    assert hits / total >= 0.85  # nominal 95 %; a 10-value bootstrap runs a little short


def test_three_repetitions_are_undecided_not_the_same(tmp_path: Path) -> None:
    """A 30 % slowdown in 3 repetitions against 3: the interval shows it, but the test cannot
    reach p < 0.05, so the verdict must not claim "same"."""
    spec = StoreSpec(repetitions=3, throughput_factor={"docker": 0.70})
    table = analysis.overhead_table(analysis.load_run(write_store(tmp_path, spec)))
    docker = table[(table["runtime"] == "docker") & (table["workload"] == "cpu")].iloc[0]
    assert docker["ratio_high"] < 1.0
    assert docker["verdict"] == "undecided"


def test_overhead_table_verdicts_and_columns(tmp_path: Path) -> None:
    spec = StoreSpec(
        throughput_factor={"docker": 0.90, "podman": 1.10},
        cpu_factor={"docker": 1.2},
        mem_extra_bytes={"docker": 16 * MiB},
        failed=2,
    )
    table = analysis.overhead_table(analysis.load_run(write_store(tmp_path, spec))).set_index(
        ["runtime", "workload"]
    )
    assert table.loc[("bare", "cpu"), "verdict"] == "baseline"
    assert table.loc[("docker", "cpu"), "verdict"] == "slower"
    assert table.loc[("podman", "cpu"), "verdict"] == "faster"
    assert table.loc[("docker", "cpu"), "p_value"] < 0.05
    # Failed and warm-up trials excluded: exactly the 10 repetitions remain.
    assert (table["n"] == spec.repetitions).all()
    assert table.loc[("docker", "cpu"), "cpu_s_ratio"] == pytest.approx(1.2, rel=0.05)
    delta = table.loc[("docker", "cpu"), "mem_peak_delta_bytes"]
    assert delta == pytest.approx(16 * MiB, rel=0.2)
    assert table.loc[("docker", "cpu"), "start_ms"] == pytest.approx(450, rel=0.1)
    low, med, high = table.loc[("docker", "vm"), ["median_low", "median", "median_high"]]
    assert low <= med <= high


def test_overhead_table_wall_time_when_no_throughput(tmp_path: Path) -> None:
    spec = fast(omit_columns=("throughput", "throughput_unit"))
    table = analysis.overhead_table(analysis.load_run(write_store(tmp_path, spec)))
    assert set(table["metric"]) == {"wall_s"}


def test_isolation_table_flags(tmp_path: Path) -> None:
    spec = fast(
        runtimes=("bare", "docker"),
        workloads=("cpu",),
        isolation=(
            IsolationCase(kind="cpu", placement="shared", degradation={"docker": 0.20}),
            IsolationCase(kind="cpu", placement="separate"),
            IsolationCase(
                kind="memory",
                aggressor_mem_limit_bytes=256 * MiB,
                aggressor_mem_peak_bytes=256 * MiB,
                aggressor_oom=True,
            ),
            IsolationCase(kind="fork", aggressor_mem_peak_bytes=300 * MiB),
            IsolationCase(kind="io", victim_status="timeout"),
        ),
    )
    table = analysis.isolation_table(analysis.load_run(write_store(tmp_path, spec)))
    table = table.set_index(["runtime", "kind", "placement"])
    harmed = table.loc[("docker", "cpu", "shared")]
    assert harmed["victim_harmed"]
    assert harmed["degradation_low_pct"] <= 20.0 <= harmed["degradation_high_pct"]
    assert harmed["degradation_pct"] == pytest.approx(20.0, abs=3.0)
    assert not table.loc[("docker", "cpu", "separate"), "victim_harmed"]
    assert not table.loc[("bare", "cpu", "shared"), "victim_harmed"]
    memory = table.loc[("docker", "memory", "shared")]
    assert memory["aggressor_oom_killed"] and memory["limit_held"]
    assert not memory["victim_harmed"]
    assert not table.loc[("docker", "fork", "shared"), "limit_held"]  # 300 MiB > 256 MiB
    assert not table.loc[("docker", "cpu", "shared"), "aggressor_oom_killed"]
    io = table.loc[("docker", "io", "shared")]
    assert io["victim_harmed"] and io["victim_failed"] == spec.repetitions


def test_isolation_limit_unknown_without_limit_columns(tmp_path: Path) -> None:
    spec = fast(
        runtimes=("bare",),
        workloads=("cpu",),
        isolation=(IsolationCase(),),
        omit_columns=("mem_limit_bytes",),
    )
    table = analysis.isolation_table(analysis.load_run(write_store(tmp_path, spec)))
    assert table["limit_held"].isna().all()


def test_timeseries_rate(tmp_path: Path) -> None:
    spec = fast(cpu_factor={"docker": 1.5})
    run = analysis.load_run(write_store(tmp_path, spec))
    tidy = analysis.timeseries(run, "cpu_usage_ns")
    assert {"run_id", "trial_id", "runtime", "workload", "t_s", "value", "rate"} <= set(
        tidy.columns
    )
    assert len(tidy) == len(run.samples)
    usable = run.trials[run.trials["usable"] & (run.trials["runtime"] == "docker")]
    docker = analysis.timeseries(run, "cpu_rate")
    docker = docker[docker["trial_id"].isin(usable["trial_id"])]
    # The generator's cores in use are cpu_s/wall_s = 1.5 for docker (±3 % jitter).
    assert docker["value"].median() == pytest.approx(1.5, rel=0.05)
    first = docker.groupby("trial_id").head(1)["value"]
    assert first.isna().all()  # no rate before the second sample
    mem = analysis.timeseries(run, "mem_current_bytes")
    assert "rate" not in mem.columns
    with pytest.raises(InputError, match="available"):
        analysis.timeseries(run, "nope")


def test_startup_and_footprint(tmp_path: Path) -> None:
    run = analysis.load_run(write_store(tmp_path, fast()))
    startup = analysis.startup_table(run).set_index("runtime")
    assert startup["fastest"].sum() == 1 and startup.loc["bare", "fastest"]
    assert startup.loc["lxc", "start_low_ms"] <= 600 <= startup.loc["lxc", "start_high_ms"]
    footprint = analysis.footprint_table(run).set_index("runtime")
    assert footprint.loc["docker", "runtime_rss_bytes"] == 40 * MiB


def test_startup_boot_column_only_for_runtimes_that_boot(tmp_path: Path) -> None:
    """boot_s (system containers) shows as its own startup column; others leave it empty."""
    from bench.report.markdown import startup_rows
    from bench.store import ResultStore

    spec = fast()
    manifest, results = build(spec)
    for result, _samples in results:
        if result.runtime == "lxc":
            result.boot_s = 0.014
    store = ResultStore(tmp_path / spec.run_id)
    store.write_manifest(manifest)
    store.add_trials(results)
    store.finish()
    startup = analysis.startup_table(analysis.load_run(store.run_dir)).set_index("runtime")
    assert startup.loc["lxc", "boot_ms"] == pytest.approx(14.0)
    assert startup.drop(index="lxc")["boot_ms"].isna().all()
    headers, rows = startup_rows(startup.reset_index())
    assert headers[3] == "of which boot ms [95% CI]"
    by_runtime = {row[0]: row[3] for row in rows}
    assert by_runtime["lxc"].startswith("14.0") and by_runtime["bare"] == "-"
    quiet = analysis.startup_table(analysis.load_run(write_store(tmp_path, fast(run_id="nb"))))
    assert "of which boot ms [95% CI]" not in startup_rows(quiet)[0]


def test_warnings(tmp_path: Path) -> None:
    quiet = analysis.load_run(write_store(tmp_path, fast(run_id="q")))
    assert analysis.warnings(quiet) == []
    spec = fast(run_id="n", noise=0.2, host_load_before=3.0, failed=1)
    kinds = {w.kind for w in analysis.warnings(analysis.load_run(write_store(tmp_path, spec)))}
    assert {"high-cv", "host-busy", "failed-trials", "too-few-repetitions"} <= kinds


def test_representative_trial(tmp_path: Path) -> None:
    run = analysis.load_run(write_store(tmp_path, fast()))
    tid = analysis.representative_trial(run, "docker", "cpu")
    group = run.trials[run.trials["usable"] & (run.trials["runtime"] == "docker")]
    group = group[group["workload"] == "cpu"]
    chosen = float(group.loc[group["trial_id"] == tid, "throughput"].iloc[0])
    assert abs(chosen - group["throughput"].median()) == min(
        abs(group["throughput"] - group["throughput"].median())
    )
    assert analysis.representative_trial(run, "nope") is None


def test_timeseries_skips_samples_that_did_not_read_the_metric(tmp_path: Path) -> None:
    """Detail metrics read every 2nd tick: rates span those ticks, not the <NA> rows."""
    run = analysis.load_run(
        write_store(tmp_path, StoreSpec(sample_hz=5.0, cpu_factor={"docker": 1.5}))
    )
    samples = run.samples.copy()
    tick = samples.groupby("trial_id").cumcount()
    samples["cpu_user_ns"] = samples["cpu_user_ns"].astype("Int64").mask(tick % 2 != 0)
    run = dataclasses.replace(run, samples=samples)
    user = analysis.timeseries(run, "cpu_user_rate")
    assert len(user) == int((tick % 2 == 0).sum())
    usable = run.trials[run.trials["usable"] & (run.trials["runtime"] == "docker")]
    docker = user[user["trial_id"].isin(usable["trial_id"])]
    # user time is 0.9 of the generator's 1.5 cores, over 0.4 s steps instead of 0.2 s.
    assert docker["value"].median() == pytest.approx(0.9 * 1.5, rel=0.05)
    assert len(analysis.timeseries(run, "cpu_usage_ns")) == len(samples)


@pytest.mark.parametrize(("cores", "held"), [(1.02, True), (1.3, False)])
def test_cpu_limit_held_is_judged_from_samples(tmp_path: Path, cores: float, held: bool) -> None:
    """Cores between the first and last sample, whatever cpu_s / wall_s says."""
    spec = fast(runtimes=("bare",), workloads=("cpu",), isolation=(IsolationCase(kind="cpu"),))
    run = analysis.load_run(write_store(tmp_path, spec))
    trials, samples = run.trials.copy(), run.samples.copy()
    aggressor = trials["role"] == "aggressor"
    trials.loc[aggressor, "cpu_limit_cpus"] = 1.0
    trials.loc[aggressor, "mem_limit_bytes"] = None
    # cpu_s counts the start and the time after wall_s: 1.2 "cores" by that division.
    trials.loc[aggressor, "cpu_s"] = trials.loc[aggressor, "wall_s"] * 1.2
    ids = trials.loc[aggressor, "trial_id"]
    rows = samples["trial_id"].isin(ids)
    samples.loc[rows, "cpu_usage_ns"] = (samples.loc[rows, "t_s"] * cores * 1e9).astype("int64")
    run = dataclasses.replace(run, trials=trials, samples=samples)
    assert analysis.isolation_table(run)["limit_held"].tolist() == [held]
