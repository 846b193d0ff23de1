"""Service tables on synthetic stores whose histograms hold known raw latencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import analysis
from bench.latency import RELATIVE_PRECISION
from tests.storegen import ServiceCase, StoreSpec, raw_latencies_s, write_store

CASE = ServiceCase(
    latency_factor={"docker/published": 1.6},
    saturated=("docker/host",),
    helper_cpu_s={"docker/published": 0.4},
)
SPEC = StoreSpec(runtimes=(), workloads=(), repetitions=6, warmups=1, services=(CASE,))


def _table(tmp_path: Path, spec: StoreSpec = SPEC) -> tuple[analysis.Run, pd.DataFrame]:
    run = analysis.load_run(write_store(tmp_path, spec))
    return run, analysis.service_table(run)


def test_percentiles_come_from_the_merged_histogram_of_measured_repetitions(
    tmp_path: Path,
) -> None:
    run, table = _table(tmp_path)
    for label in CASE.paths:
        raw = np.concatenate(
            [raw_latencies_s(SPEC, CASE, label, rep) for rep in range(1, 1 + SPEC.repetitions)]
        )
        row = table[table["runtime"] == label].iloc[0]
        for column, q in (
            ("latency_p50_s", 50),
            ("latency_p90_s", 90),
            ("latency_p99_s", 99),
            ("latency_p999_s", 99.9),
        ):
            # HdrHistogram keeps each value within 1/1024; numpy's "lower" is the same rank.
            exact = np.percentile(raw, q, method="lower")
            assert row[column] == pytest.approx(exact, rel=2 * RELATIVE_PRECISION)
        # Averaging the per-trial p99.9s is what the table must not do: it differs here.
        trials = run.trials[(run.trials["label"] == label) & run.trials["usable"]]
        assert len(trials) == SPEC.repetitions
        assert row["latency_p999_s"] != pytest.approx(trials["latency_p999_s"].mean(), rel=1e-3)


def test_ratio_saturation_and_cpu_per_1k_requests(tmp_path: Path) -> None:
    run, table = _table(tmp_path)
    rows = {r.runtime: r for r in table.itertuples()}
    assert list(rows) == ["bare/host", "docker/host", "docker/published"]
    assert rows["bare/host"].p99_ratio == 1.0
    assert rows["docker/published"].p99_ratio == pytest.approx(1.6, rel=0.1)
    assert rows["docker/published"].p99_p_value < 0.05
    assert rows["docker/host"].client_saturated == SPEC.repetitions
    assert rows["bare/host"].client_saturated == 0
    assert rows["docker/published"].helper_cpu_s_per_1k_requests == pytest.approx(
        0.4 / CASE.requests * 1e3
    )
    assert np.isnan(rows["bare/host"].helper_cpu_s_per_1k_requests)
    server = rows["bare/host"].server_cpu_s_per_1k_requests
    assert server == pytest.approx(CASE.server_cpu_s_per_request * 1e3, rel=0.05)
    assert rows["bare/host"].requests == CASE.requests * SPEC.repetitions
    low, mid, high = (
        rows["bare/host"].requests_per_s_low,
        rows["bare/host"].requests_per_s,
        rows["bare/host"].requests_per_s_high,
    )
    assert low <= mid <= high
    kinds = [(w.kind, w.runtime) for w in analysis.warnings(run)]
    assert kinds == [("client-saturated", "docker/host")]


def test_sweep_rates_are_rows_of_their_own_in_rising_order(tmp_path: Path) -> None:
    """10000/s after 5000/s, although as text it sorts before it."""
    cases = tuple(ServiceCase(offered_rate_per_s=rate) for rate in (10000.0, 5000.0, 1000.0))
    spec = StoreSpec(runtimes=(), workloads=(), repetitions=3, services=cases)
    _run, table = _table(tmp_path, spec)
    rates = list(dict.fromkeys(table["workload"]))
    assert rates == ["http-get@1000/s", "http-get@5000/s", "http-get@10000/s"]
    assert list(dict.fromkeys(table["offered_rate_per_s"])) == [1000.0, 5000.0, 10000.0]
    assert list(dict.fromkeys(analysis.overhead_table(_run)["workload"])) == rates


def test_no_service_trials_is_an_empty_table(tmp_path: Path) -> None:
    _run, table = _table(tmp_path, StoreSpec(repetitions=3))
    assert len(table) == 0
    assert "latency_p99_s" in table.columns


def test_a_sweeps_knee_is_its_last_rate_before_p99_doubles(tmp_path: Path) -> None:
    """Latency flat up to 4,000/s, x3 at 8,000/s: the knee is 4,000/s for every label, and
    the Markdown report marks that row."""
    medians = {1000.0: 200e-6, 2000.0: 205e-6, 4000.0: 230e-6, 8000.0: 600e-6}
    cases = tuple(
        ServiceCase(offered_rate_per_s=rate, latency_median_s=median)
        for rate, median in medians.items()
    )
    spec = StoreSpec(runtimes=(), workloads=(), repetitions=3, services=cases)
    _run, table = _table(tmp_path, spec)
    knees = table[table["knee"]]
    assert sorted(knees["workload"]) == ["http-get@4000/s"] * 3
    assert set(knees["runtime"]) == set(table["runtime"])
    from bench.report.markdown import md_table, service_rows

    assert md_table(*service_rows(table)).count("http-get@4000/s (knee)") == 3


def test_knee_rule_on_schedule_and_p99() -> None:
    """A label that fell behind its schedule at 3,000/s has its knee at 2,000/s even with a
    flat p99; one that missed the rule at its lowest rate has none; no sweep, no knee."""
    from bench.service_analysis import sweep_knees

    rows = [
        ("a", "x@1000/s", 1000.0, 1000.0, 1.0e-3),
        ("a", "x@2000/s", 2000.0, 1990.0, 1.1e-3),
        ("a", "x@3000/s", 3000.0, 2700.0, 1.2e-3),
        ("a", "x@4000/s", 4000.0, 3990.0, 1.2e-3),  # back on schedule: after the knee anyway
        ("b", "x@1000/s", 1000.0, 900.0, 1.0e-3),
        ("b", "x@2000/s", 2000.0, 2000.0, 1.0e-3),
        ("c", "closed", float("nan"), 5000.0, 1.0e-3),
    ]
    table = pd.DataFrame(
        rows,
        columns=["runtime", "workload", "offered_rate_per_s", "requests_per_s", "latency_p99_s"],
    )
    knees = table[sweep_knees(table)]
    assert list(zip(knees["runtime"], knees["workload"], strict=True)) == [("a", "x@2000/s")]


def test_open_loop_overhead_is_judged_on_median_latency_not_the_schedules_rate(
    tmp_path: Path,
) -> None:
    """At a fixed offered rate the achieved rate is the schedule's: docker/published's 1.6x
    latency makes it "slower" on p50; the closed-loop workload stays on throughput."""
    swept = ServiceCase(
        workload="rr", offered_rate_per_s=1000.0, latency_factor={"docker/published": 1.6}
    )
    spec = StoreSpec(runtimes=(), workloads=(), repetitions=6, services=(CASE, swept))
    run = analysis.load_run(write_store(tmp_path, spec))
    table = analysis.overhead_table(run, baseline="bare/host").set_index(["workload", "runtime"])
    assert set(table.loc["rr@1000/s", "metric"]) == {"latency_p50_s"}
    assert set(table.loc["http-get", "metric"]) == {"throughput"}
    published = table.loc[("rr@1000/s", "docker/published")]
    assert published["unit"] == "s" and published["verdict"] == "slower"
    assert published["ratio"] == pytest.approx(1.6, rel=0.1)
    assert table.loc[("rr@1000/s", "docker/host"), "verdict"] == "same"
