"""Service workloads as tables: requests/s, latency percentiles of the merged histograms of
the measured repetitions, client saturation, and CPU-seconds per 1,000 requests; for
multi-tier services, each tier's own CPU during the load and its memory (tier_table).

Percentiles are never averaged over repetitions: each trial stores its whole HdrHistogram
(bench.latency), and a label's p99 is the p99 of all its requests together.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.frames import Run, default_baseline, label_order, sweep_name, workload_order
from bench.latency import STANDARD_PERCENTILES, LatencyHistogram

PERCENTILE_COLUMNS = ("latency_p50_s", "latency_p90_s", "latency_p99_s", "latency_p999_s")
COLUMNS = [
    "runtime",
    "workload",
    "offered_rate_per_s",
    "n",
    "requests_per_s",
    "requests_per_s_low",
    "requests_per_s_high",
    "requests",
    "errors",
    "failed",
    *PERCENTILE_COLUMNS,
    "p99_ratio",
    "p99_p_value",
    "client_saturated",
    "helper_cpu_s_per_1k_requests",
    "server_cpu_s_per_1k_requests",
    "knee",
]
TIER_COLUMNS = [
    "workload",
    "tier",
    "runtime",
    "n",
    "load_cpu_s",
    "load_cpu_s_low",
    "load_cpu_s_high",
    "cpu_s_per_1k_requests",
    "mem_peak_bytes",
]
# A rate sweep's knee: the highest offered rate up to which every rate was kept on schedule
# (achieved >= 97 % of offered: the open-loop clients' own saturation rule) with a p99 at most
# twice the lowest rate's. Past it, queueing, not the path, sets the latency.
KNEE_KEPT_FRACTION = 0.97
KNEE_P99_FACTOR = 2.0


def service_trials(run: Run) -> pd.DataFrame:
    """Measured solo trials of service workloads (the client counted requests), any status."""
    trials = run.trials
    measured = trials[~trials["warmup"] & (trials["role"] == "solo")]
    return measured[measured["requests"].notna() | (measured["latency_hist"] != "")]


def merged_histogram(trials: pd.DataFrame) -> LatencyHistogram:
    """Every request of `trials` in one histogram (trials without one add nothing)."""
    return LatencyHistogram.merged(
        LatencyHistogram.decode(str(text)) for text in trials["latency_hist"] if text
    )


def _merged_percentiles_s(trials: pd.DataFrame) -> dict[str, float]:
    histogram = merged_histogram(trials)
    if histogram.count == 0:
        return dict.fromkeys(PERCENTILE_COLUMNS, math.nan)
    found = histogram.percentiles_s(STANDARD_PERCENTILES)
    return {
        column: found[p] for column, p in zip(PERCENTILE_COLUMNS, STANDARD_PERCENTILES, strict=True)
    }


def _per_1k_requests(cpu_s: pd.Series, requests: pd.Series) -> float:
    """Summed CPU-seconds over summed requests of the trials that reported both, x 1,000."""
    both = cpu_s.notna() & requests.notna()
    total = float(requests[both].sum())
    return float(cpu_s[both].sum()) / total * 1e3 if total > 0 else math.nan


def _values(frame: pd.DataFrame, column: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    return stats.as_array(frame[column].to_numpy(dtype=float, na_value=np.nan))


def service_table(
    run: Run, *, baseline: str | None = None, alpha: float = stats.ALPHA
) -> pd.DataFrame:
    """Per service workload x label (runtime/network): median requests/s [95 % CI], errors,
    p50/p90/p99/p99.9 latency (s) of the merged histograms of the usable repetitions, the
    p99 ratio to `baseline` (default: bare metal on loopback) with a Mann-Whitney p-value
    over per-repetition p99s, how many trials had a saturated client, and the CPU-seconds per
    1,000 requests of the runtime's network helpers and of the server's own cgroup.
    """
    trials = service_trials(run)
    rows: list[dict[str, Any]] = []
    for workload in workload_order(trials):
        by_workload = trials[trials["workload"] == workload]
        usable = by_workload[by_workload["usable"]]
        base_label = default_baseline(by_workload["label"]) if baseline is None else baseline
        base = usable[usable["label"] == base_label]
        base_p99 = _merged_percentiles_s(base)["latency_p99_s"]
        for label in label_order(by_workload["label"].unique(), base_label):
            every = by_workload[by_workload["label"] == label]
            group = usable[usable["label"] == label]
            rate = stats.median_ci(_values(group, "requests_per_s"))
            percentiles = _merged_percentiles_s(group)
            p_value = math.nan
            if label != base_label and len(base):
                test = stats.differs(
                    _values(group, "latency_p99_s"), _values(base, "latency_p99_s"), alpha=alpha
                )
                p_value = test.p_value
            offered = every["offered_rate_per_s"].dropna()
            rows.append(
                {
                    "runtime": label,
                    "workload": workload,
                    "offered_rate_per_s": float(offered.iloc[0]) if len(offered) else math.nan,
                    "n": len(group),
                    **rate.columns("requests_per_s"),
                    "requests": int(every["requests"].fillna(0).sum()),
                    "errors": int(every["request_errors"].fillna(0).sum()),
                    "failed": int((every["status"] != "ok").sum()),
                    **percentiles,
                    "p99_ratio": percentiles["latency_p99_s"] / base_p99
                    if base_p99 > 0
                    else math.nan,
                    "p99_p_value": p_value,
                    "client_saturated": int(group["client_saturated"].sum()),
                    "helper_cpu_s_per_1k_requests": _per_1k_requests(
                        group["helper_cpu_s"], group["requests"]
                    ),
                    "server_cpu_s_per_1k_requests": _per_1k_requests(
                        group["cpu_s"], group["requests"]
                    ),
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["knee"] = sweep_knees(table)
    return table


def sweep_knees(table: pd.DataFrame) -> pd.Series:
    """True on the row that is its sweep's knee for its label (KNEE_* above); a label that
    missed the rule at its lowest rate has none, and so has a workload without a sweep."""
    knee = pd.Series(False, index=table.index, dtype=bool)
    swept = table[table["offered_rate_per_s"].notna()]
    for _, rows in swept.groupby([sweep_name(swept["workload"]), swept["runtime"]]):
        if rows["workload"].nunique() < 2:
            continue
        rows = rows.sort_values("offered_rate_per_s")
        lowest_p99_s = float(rows["latency_p99_s"].iloc[0])
        held = (rows["requests_per_s"] >= KNEE_KEPT_FRACTION * rows["offered_rate_per_s"]) & (
            rows["latency_p99_s"] <= KNEE_P99_FACTOR * lowest_p99_s
        )
        up_to = held.cumprod().astype(bool)
        if up_to.any():
            knee[up_to[up_to].index[-1]] = True
    return knee


def tier_table(run: Run) -> pd.DataFrame:
    """Per multi-tier workload x tier (in start order) x label: the tier's own cgroup's
    CPU-seconds during the load (median [95 % CI] of the usable repetitions), the same per
    1,000 requests of the client at the front, and its memory peak (the highest)."""
    trials = run.trials
    if "tier" not in trials.columns:  # a store written before multi-tier services
        return pd.DataFrame(columns=TIER_COLUMNS)
    tiered = trials[~trials["warmup"] & (trials["role"] == "solo") & (trials["tier"] != "")]
    # The front's row of each step carries the client's requests; the other tiers' none.
    requests = tiered.groupby("group_id")["requests"].sum(min_count=1)
    usable = tiered[tiered["usable"]]
    rows: list[dict[str, Any]] = []
    for workload, by_workload in usable.groupby("workload", sort=True):
        base_label = default_baseline(by_workload["label"])
        labels = label_order(by_workload["label"].unique(), base_label)
        for tier in dict.fromkeys(by_workload["tier"]):  # trial order: the start order
            for label in labels:
                group = by_workload[(by_workload["tier"] == tier) & (by_workload["label"] == label)]
                if group.empty:
                    continue
                cpu = stats.median_ci(_values(group, "load_cpu_s"))
                step_requests = group["group_id"].map(requests).astype(float)
                rows.append(
                    {
                        "workload": workload,
                        "tier": tier,
                        "runtime": label,
                        "n": len(group),
                        **cpu.columns("load_cpu_s"),
                        "cpu_s_per_1k_requests": _per_1k_requests(
                            group["load_cpu_s"], step_requests
                        ),
                        "mem_peak_bytes": float(group["mem_peak_bytes"].max()),
                    }
                )
    return pd.DataFrame(rows, columns=TIER_COLUMNS)


def service_warnings(run: Run) -> list[stats.StatWarning]:
    """A label whose client was saturated: its requests/s is the client's limit, not the
    server's, and its latencies include the client's own queueing."""
    trials = service_trials(run)
    by_label = trials[trials["usable"]].groupby(["label", "workload"], sort=True)
    counts = by_label["client_saturated"].agg(saturated="sum", trials="size")
    return [
        stats.StatWarning(
            "client-saturated",
            f"{label} {workload}: the load generator's CPU was saturated in {saturated} "
            f"of {n} trials; requests/s and latency measure the client there",
            str(label),
            str(workload),
            metric="requests_per_s",
            value=float(saturated),
        )
        for (label, workload), saturated, n in zip(
            counts.index, counts["saturated"], counts["trials"], strict=True
        )
        if saturated
    ]
