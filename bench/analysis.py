"""Notebook API: load result stores into pandas and build overhead/isolation/service tables.

Reads only the result store (docs/architecture.md), through bench.frames. Every table
excludes warm-up and non-ok trials; medians carry 95 % bootstrap CIs and differences a
Mann-Whitney p-value (see bench.stats for why).

    >>> run = load_run("results/2025-01-01T00-00-00-overhead")
    >>> overhead_table(run)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.frames import Run as Run
from bench.frames import default_baseline as default_baseline
from bench.frames import label_order as label_order
from bench.frames import load_run as load_run
from bench.frames import load_runs as load_runs
from bench.frames import timeseries as timeseries
from bench.frames import usable_solo as usable_solo
from bench.frames import workload_order
from bench.history import load_history as load_history
from bench.runtimes import registry
from bench.service_analysis import service_table as service_table
from bench.service_analysis import service_warnings as service_warnings
from bench.service_analysis import tier_table as tier_table

HARM_THRESHOLD_PCT = 5.0
CPU_LIMIT_SLACK = 1.05  # accounting granularity: a CFS quota can overshoot by a few percent


# --- helpers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """The column a workload's performance is judged by, and which direction is better."""

    column: str
    unit: str
    bigger_is_better: bool


def primary_metric(trials: pd.DataFrame) -> Metric:
    """Throughput when every usable trial reported one, else wall time; median latency at a
    fixed offered rate (open loop), where the rate achieved is the schedule's."""
    usable = trials[trials["usable"]]
    # Open loop, the client sends on a schedule: a full app-queue run achieved 750.18-750.21
    # messages/s on every path at 750/s, and Mann-Whitney called four paths "faster" than
    # bare metal (p = 0.029) at a ratio of 1.000 [1.000, 1.000]. What a runtime costs at a
    # fixed load is latency.
    open_loop = ["offered_rate_per_s", "latency_p50_s"]
    has_columns = set(open_loop) <= set(usable.columns)
    if len(usable) and has_columns and usable[open_loop].notna().all(axis=None):
        return Metric("latency_p50_s", "s", False)
    if len(usable) and usable["throughput"].notna().all():
        units = usable["throughput_unit"].replace("", np.nan).dropna()
        return Metric("throughput", str(units.iloc[0]) if len(units) else "", True)
    return Metric("wall_s", "s", False)


def metric_values(frame: pd.DataFrame, column: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The finite values of one column as a float array."""
    return stats.as_array(frame[column].to_numpy(dtype=float, na_value=np.nan))


def _median(series: pd.Series) -> float:
    """Median of the finite values, NaN when there are none (no RuntimeWarning)."""
    arr = stats.as_array(series.to_numpy(dtype=float, na_value=np.nan))
    return float(np.median(arr)) if arr.size else math.nan


def _verdict(test: stats.TestResult, ratio: float, bigger_is_better: bool) -> str:
    if not test.differs or not math.isfinite(ratio):
        return "same" if test.decidable else "undecided"
    better = ratio > 1.0 if bigger_is_better else ratio < 1.0
    return "faster" if better else "slower"


# --- tables -----------------------------------------------------------------------------


def overhead_table(
    run: Run, *, baseline: str | None = None, alpha: float = stats.ALPHA
) -> pd.DataFrame:
    """Runtime x workload: median metric [95 % CI], ratio to `baseline` [CI], verdict.

    `baseline` is a runtime label; None is the registry's baseline runtime (bare metal).

    Columns: runtime, workload, n, metric, unit, median, median_low, median_high, ratio,
    ratio_low, ratio_high, cpu_s_ratio, mem_peak_delta_bytes, start_ms, stop_ms, p_value,
    verdict ("baseline" | "same" | "slower" | "faster" | "undecided": too few repetitions
    for the test to tell, see stats.TestResult.decidable | "no-baseline"). `ratio` is
    new/baseline of the metric: > 1 is faster for throughput, slower for wall_s.
    """
    baseline = default_baseline(run.trials["label"]) if baseline is None else baseline
    solo = usable_solo(run)
    rows: list[dict[str, Any]] = []
    for workload in workload_order(solo):
        by_workload = solo[solo["workload"] == workload]
        metric = primary_metric(by_workload)
        base = by_workload[by_workload["label"] == baseline]
        for label in label_order(by_workload["label"].unique(), baseline):
            group = by_workload[by_workload["label"] == label]
            values = metric_values(group, metric.column)
            med = stats.median_ci(values)
            row: dict[str, Any] = {
                "runtime": label,
                "workload": workload,
                "n": len(group),
                "metric": metric.column,
                "unit": metric.unit,
                **med.columns("median"),
                "start_ms": _median(group["start_s"]) * 1e3,
                "stop_ms": _median(group["stop_s"]) * 1e3,
            }
            if base.empty:
                ratio, cpu_ratio, mem_delta = stats.NAN_ESTIMATE, np.nan, np.nan
                p, verdict = np.nan, "no-baseline"
            else:
                ratio = stats.ratio_ci(values, metric_values(base, metric.column))
                base_cpu = _median(base["cpu_s"])
                cpu_ratio = _median(group["cpu_s"]) / base_cpu if base_cpu else math.nan
                mem_delta = _median(group["mem_peak_bytes"]) - _median(base["mem_peak_bytes"])
                if label == baseline:
                    p, verdict = np.nan, "baseline"
                else:
                    test = stats.differs(values, metric_values(base, metric.column), alpha=alpha)
                    p, verdict = test.p_value, _verdict(test, ratio.value, metric.bigger_is_better)
            row.update(
                ratio.columns("ratio"),
                cpu_s_ratio=cpu_ratio,
                mem_peak_delta_bytes=mem_delta,
                p_value=p,
                verdict=verdict,
            )
            rows.append(row)
    columns = [
        "runtime",
        "workload",
        "n",
        "metric",
        "unit",
        "median",
        "median_low",
        "median_high",
        "ratio",
        "ratio_low",
        "ratio_high",
        "cpu_s_ratio",
        "mem_peak_delta_bytes",
        "start_ms",
        "stop_ms",
        "p_value",
        "verdict",
    ]
    return pd.DataFrame(rows, columns=columns)


def _limit_held(aggressors: pd.DataFrame, samples: pd.DataFrame) -> bool | None:
    """Whether every aggressor stayed within its memory / pids / CPU limit; None if unknown."""
    verdicts: list[bool] = []
    mem = aggressors.dropna(subset=["mem_limit_bytes", "mem_peak_bytes"])
    if len(mem):
        verdicts.append(bool((mem["mem_peak_bytes"] <= mem["mem_limit_bytes"]).all()))
    pids = aggressors.dropna(subset=["pids_limit"])
    if len(pids) and "pids_current" in samples.columns:
        peak = samples.groupby(["run_id", "trial_id"], as_index=False)["pids_current"].max()
        joined = pids.merge(peak, on=["run_id", "trial_id"]).dropna(subset=["pids_current"])
        if len(joined):
            verdicts.append(bool((joined["pids_current"] <= joined["pids_limit"]).all()))
    cpu = aggressors.dropna(subset=["cpu_limit_cpus"])
    if len(cpu) and "cpu_usage_ns" in samples.columns:
        # Cores used between the first and the last sample, both exact cgroup reads. Not
        # cpu_s / wall_s: an aggressor's cpu_s also counts its start (before the first
        # sample) and keeps running until the final read after wall_s was taken, which
        # put a fork bomb limited to 1 CPU at 1.06 "cores" (isolation-fork, docker).
        spans = (
            samples.dropna(subset=["cpu_usage_ns"])
            .groupby(["run_id", "trial_id"], as_index=False)
            .agg(
                cpu_ns_low=("cpu_usage_ns", "min"),
                cpu_ns_high=("cpu_usage_ns", "max"),
                t_low_s=("t_s", "min"),
                t_high_s=("t_s", "max"),
            )
        )
        joined = cpu.merge(spans, on=["run_id", "trial_id"])
        joined = joined[joined["t_high_s"] > joined["t_low_s"]]
        if len(joined):
            used_ns = (joined["cpu_ns_high"] - joined["cpu_ns_low"]).astype(float)
            used = used_ns / 1e9 / (joined["t_high_s"] - joined["t_low_s"])
            verdicts.append(bool((used <= joined["cpu_limit_cpus"] * CPU_LIMIT_SLACK).all()))
    return all(verdicts) if verdicts else None


def isolation_table(
    run: Run, *, threshold_pct: float = HARM_THRESHOLD_PCT, alpha: float = stats.ALPHA
) -> pd.DataFrame:
    """Runtime x aggressor kind x placement: what the victim lost and whether limits held.

    Columns: runtime, kind, placement, victim_workload, n, degradation_pct [low, high]
    (loss of the victim's metric vs its solo baseline in the same run, positive = worse),
    p_value, limit_held (True/False, <NA> when the store has no limit columns),
    aggressor_oom_killed, victim_failed (count), victim_harmed (a victim failed, or a
    significant degradation above `threshold_pct`).
    """
    trials = run.trials
    victims = trials[(trials["role"] == "victim") & ~trials["warmup"]]
    columns = [
        "runtime",
        "kind",
        "placement",
        "victim_workload",
        "n",
        "degradation_pct",
        "degradation_low_pct",
        "degradation_high_pct",
        "p_value",
        "limit_held",
        "aggressor_oom_killed",
        "victim_failed",
        "victim_harmed",
    ]
    rows: list[dict[str, Any]] = []
    keys = ["label", "scenario_isolation_kind", "placement", "workload"]
    for (label, kind, placement, workload), group in victims.groupby(keys, sort=True):
        solo = usable_solo(run)
        base = solo[
            (solo["label"] == label)
            & (solo["workload"] == workload)
            & solo["run_id"].isin(group["run_id"].unique())
        ]
        ok = group[group["usable"]]
        metric = primary_metric(pd.concat([base, ok]))
        new_values, base_values = (
            metric_values(ok, metric.column),
            metric_values(base, metric.column),
        )
        ratio = stats.ratio_ci(new_values, base_values)
        test = stats.differs(new_values, base_values, alpha=alpha)
        sign = 1.0 if metric.bigger_is_better else -1.0
        # Throughput: losing 20 % is ratio 0.8 -> +20 %. Wall time: ratio 1.2 -> +20 %.
        bounds = sorted(sign * (1.0 - r) * 100.0 for r in (ratio.low, ratio.high))
        degradation = sign * (1.0 - ratio.value) * 100.0
        in_groups = trials.set_index(["run_id", "group_id"]).index.isin(
            pd.MultiIndex.from_frame(group[["run_id", "group_id"]])
        )
        aggressors = trials[in_groups & (trials["role"] == "aggressor")]
        failed = int((group["status"] != "ok").sum())
        significant = test.differs and math.isfinite(degradation) and degradation > threshold_pct
        rows.append(
            {
                "runtime": label,
                "kind": kind,
                "placement": placement,
                "victim_workload": workload,
                "n": len(ok),
                "degradation_pct": degradation,
                "degradation_low_pct": bounds[0],
                "degradation_high_pct": bounds[1],
                "p_value": test.p_value,
                "limit_held": _limit_held(aggressors, run.samples),
                "aggressor_oom_killed": bool(
                    ((aggressors["oom_kills"] > 0) | (aggressors["status"] == "oom")).any()
                ),
                "victim_failed": failed,
                "victim_harmed": bool(failed > 0 or significant),
            }
        )
    table = pd.DataFrame(rows, columns=columns)
    table["limit_held"] = table["limit_held"].astype("boolean")
    return table


def representative_trial(run: Run, runtime: str, workload: str | None = None) -> str | None:
    """The usable solo trial whose metric is nearest its group's median (for plots)."""
    solo = usable_solo(run)
    group = solo[solo["label"] == runtime]
    if workload is not None:
        group = group[group["workload"] == workload]
    if group.empty:
        return None
    metric = primary_metric(group)
    values = group[metric.column].to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return str(group["trial_id"].iloc[0])
    distance = np.where(finite, np.abs(values - np.median(values[finite])), np.inf)
    return str(group["trial_id"].iloc[int(np.argmin(distance))])


def startup_table(run: Run) -> pd.DataFrame:
    """Per runtime: start and stop latency medians in ms [95 % CI]; `fastest` marks the best.

    `boot_ms`: the part of the start until a system container's init was up (NaN for
    runtimes that boot none).
    """
    solo = usable_solo(run)
    rows = []
    for label in label_order(solo["label"].unique()):
        group = solo[solo["label"] == label]
        start = stats.median_ci(metric_values(group, "start_s") * 1e3)
        stop = stats.median_ci(metric_values(group, "stop_s") * 1e3)
        boot = stats.median_ci(metric_values(group, "boot_s") * 1e3)
        rows.append(
            {
                "runtime": label,
                "n": start.n,
                "start_ms": start.value,
                "start_low_ms": start.low,
                "start_high_ms": start.high,
                "stop_ms": stop.value,
                "stop_low_ms": stop.low,
                "stop_high_ms": stop.high,
                "boot_ms": boot.value,
                "boot_low_ms": boot.low,
                "boot_high_ms": boot.high,
            }
        )
    columns = (
        "runtime n start_ms start_low_ms start_high_ms stop_ms stop_low_ms stop_high_ms "
        "boot_ms boot_low_ms boot_high_ms"
    )
    table = pd.DataFrame(rows, columns=columns.split())
    finite = table["start_ms"].notna()
    table["fastest"] = False
    if finite.any():
        table.loc[table.loc[finite, "start_ms"].idxmin(), "fastest"] = True
    return table


def footprint_table(run: Run) -> pd.DataFrame:
    """Per runtime with processes of its own: median RSS and PSS of them (daemon, shim).

    For density steps (N containers started together, `group_size` > 1) also the
    runtime's PSS per container: (PSS with N running - PSS just before) / N, with a CI.
    Runtimes that declare none (bare metal) are left out: their footprint is no
    measurement, only zero.
    """
    solo = usable_solo(run)
    rows = []
    for label in label_order(solo["label"].unique()):
        known = registry.of_label(label)
        if known is not None and not known.capabilities.own_processes:
            continue
        group = solo[solo["label"] == label]
        row: dict[str, object] = {
            "runtime": label,
            "runtime_rss_bytes": _median(group["runtime_rss_bytes"]),
            "runtime_pss_bytes": _median(group["runtime_pss_bytes"]),
        }
        if "runtime_pss_idle_bytes" in group and "group_size" in group:
            dense = group[group["group_size"].fillna(1) > 1]
            per_container = (
                (dense["runtime_pss_bytes"] - dense["runtime_pss_idle_bytes"]) / dense["group_size"]
            ).to_numpy(dtype=float, na_value=np.nan)
            estimate = stats.median_ci(per_container)
            row["containers"] = _median(dense["group_size"])
            row["pss_per_container_bytes"] = estimate.value
            row["pss_per_container_low_bytes"] = estimate.low
            row["pss_per_container_high_bytes"] = estimate.high
        rows.append(row)
    return pd.DataFrame(rows)


def warnings(run: Run) -> list[stats.StatWarning]:
    """Everything that makes a run's numbers less trustworthy, most general first."""
    out: list[stats.StatWarning] = []
    for run_id, manifest in run.manifests.items():
        if manifest.status != "complete":
            out.append(stats.StatWarning("run-incomplete", f"run {run_id} is {manifest.status}"))
        cpus = manifest.host.cpus if manifest.host else None
        busy = stats.host_busy_warning(manifest.host_load_before, cpus)
        if busy is not None:
            out.append(busy)
        for name, info in manifest.runtimes.items():
            if not info.available:
                reason = info.reason or "unavailable"
                out.append(
                    stats.StatWarning("runtime-skipped", f"{name} was skipped: {reason}", name)
                )
    # An aggressor killed by its own limit is an isolation result, not a failed measurement.
    trials = run.trials[~run.trials["warmup"] & (run.trials["role"] != "aggressor")]
    for label, group in trials.groupby("label", sort=True):
        bad = group[group["status"] != "ok"]
        if len(bad):
            counts = ", ".join(f"{n} {s}" for s, n in bad["status"].value_counts().items())
            out.append(
                stats.StatWarning(
                    "failed-trials",
                    f"{label}: {len(bad)} of {len(group)} trials did not finish ok ({counts})",
                    str(label),
                    value=float(len(bad)),
                )
            )
        flagged = int(group["mem_peak_from_samples"].sum())
        if flagged:
            out.append(
                stats.StatWarning(
                    "mem-peak-from-samples",
                    f"{label}: peak memory of {flagged} trials is the max of samples (no "
                    "memory.peak on this kernel) and may miss short spikes",
                    str(label),
                    metric="mem_peak_bytes",
                )
            )
    out.extend(service_warnings(run))
    solo = usable_solo(run)
    for (runtime, workload), group in solo.groupby(["label", "workload"], sort=True):
        metric = primary_metric(group)
        out.extend(
            stats.sample_warnings(
                metric_values(group, metric.column),
                runtime=str(runtime),
                workload=str(workload),
                metric=metric.column,
            )
        )
    return out
