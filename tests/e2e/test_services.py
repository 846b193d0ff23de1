"""Service scenarios end to end: real servers under every runtime, real traffic from the host.

Each shipped service scenario runs with `--quick` under bare, docker, podman and lxc; every
runtime and network path must have carried real requests without errors, with latency
percentiles in order and a histogram that decodes to them (on the front tier's row of a
multi-tier service; every tier's own cgroup busy during the load), and afterwards nothing
bench started may still listen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import psutil
import pytest

from bench.analysis import load_run, overhead_table
from bench.latency import LatencyHistogram
from bench.plan import network_axis
from bench.scenario_load import load_scenario, resolve_scenario
from bench.stacks import stack_of
from tests.helpers import bench, require, require_root
from tests.hostservers import server_dir

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 600
SCENARIOS = ["app-http", "app-kv", "app-db", "overhead-network", "app-queue", "app-multitier"]
# Per scenario, (workload, tier): the tier that workload's requests reach and the scenario's
# first workload's requests do not (app-multitier: /db reads PostgreSQL, /cached redis, /json
# neither). Its own cgroup must show it: more CPU per request than under the first workload.
TIER_AT_WORK = {"app-multitier": [("db", "db"), ("cached", "cache")]}


def listening_ports() -> set[int]:
    return {
        conn.laddr.port
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def tier_cpu_per_request_s(trials: pd.DataFrame, workload: str, tier: str) -> float:
    """A tier's CPU during the load over the requests of the same steps (every runtime)."""
    rows = trials[trials["workload"].astype(str).str.split("@").str[0] == workload]
    requests = rows.groupby("group_id")["requests"].sum()
    cpu_s = rows[rows["tier"] == tier].groupby("group_id")["load_cpu_s"].sum()
    return float(cpu_s.sum() / requests[cpu_s.index].sum())


@pytest.mark.parametrize("name", SCENARIOS)
def test_quick_service_scenario_measures_real_traffic_everywhere(name: str) -> None:
    require_root()
    scenario = load_scenario(resolve_scenario(name))
    before = listening_ports()
    # A results directory nobody, whom the servers run as, can reach.
    with server_dir("bench-e2e-services-") as results_dir:
        done = bench(
            "run", name, "--quick", "--results-dir", str(results_dir), "--json",
            timeout_s=RUN_TIMEOUT_S,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout)
        assert out["status"] == "complete", out
        manifest = json.loads((Path(out["run_dir"]) / "manifest.json").read_text())
        trials = pd.read_parquet(Path(out["run_dir"]) / "trials.parquet")
        overhead = overhead_table(load_run(Path(out["run_dir"])))
    for runtime in scenario.runtimes:
        info = manifest["runtimes"].get(runtime, {})
        require(info.get("available", False), f"{runtime}: {info.get('reason', 'not run')}")
    # A mode a runtime lacks (lxc has no published ports) is planned as skipped, with why.
    unsupported = trials["error"].str.contains("does not support network mode")
    assert (trials.loc[unsupported, "status"] == "skipped").all()
    measured = trials[~trials["warmup"] & ~unsupported]
    bad = measured[measured["status"] != "ok"]
    assert bad.empty, bad[["trial_id", "status", "error"]].to_string()
    # Every runtime over every path it supports, for every workload.
    expected = {
        (runtime, network, workload.name)
        for runtime in scenario.runtimes
        for network, skip_reason in network_axis(scenario, runtime)
        if not skip_reason
        for workload in scenario.workloads
    }
    seen = {
        (row.runtime, row.network, str(row.workload).split("@")[0]) for row in measured.itertuples()
    }
    assert seen == expected
    # The client's numbers are on the front tier's row; a stack's other tiers have their own
    # cgroup's CPU, during the load too.
    fronts = {w.name: stack_of(str(w.service)).front.name for w in scenario.workloads}
    is_front = [
        row.tier == fronts[str(row.workload).split("@")[0]] for row in measured.itertuples()
    ]
    for row in measured[[not front for front in is_front]].itertuples():
        assert row.cpu_s > 0 and row.load_cpu_s > 0, f"{row.trial_id}: its cgroup saw no CPU"
        assert pd.isna(row.requests), row.trial_id
    for row in measured[is_front].itertuples():
        assert row.throughput > 0, row.trial_id  # req/s, or B/s for a stream
        if row.throughput_unit == "req/s":
            assert row.requests > 0 and row.requests_per_s > 0, row.trial_id
            # Every request/response generator records each request's latency.
            assert row.latency_hist, f"{row.trial_id}: no latency histogram"
        assert row.request_errors == 0, row.trial_id
        assert row.cpu_s > 0, f"{row.trial_id}: the server's cgroup saw no CPU"
        assert row.client_cpu_s > 0, row.trial_id
        if row.latency_hist:
            percentiles = [row.latency_p50_s, row.latency_p90_s, row.latency_p99_s]
            assert 0 < percentiles[0] <= percentiles[1] <= percentiles[2] <= row.latency_p999_s
            histogram = LatencyHistogram.decode(row.latency_hist)
            assert histogram.count > 0
            assert histogram.summary().p99_s == pytest.approx(row.latency_p99_s)
    for workload, tier in TIER_AT_WORK.get(name, []):
        idle, busy = (
            tier_cpu_per_request_s(measured, other, tier)
            for other in (scenario.workloads[0].name, workload)
        )
        assert busy > 2 * idle, f"{tier}: {busy:.3g} s/request under {workload}, {idle:.3g} idle"
    # The overhead table counts each step once, by the client's numbers on its front row:
    # its throughput, or at a fixed offered rate (open loop) its median latency.
    open_loop = set(measured.loc[measured["offered_rate_per_s"].notna(), "workload"])
    expected = overhead["workload"].map(
        lambda w: "latency_p50_s" if w in open_loop else "throughput"
    )
    assert (overhead["metric"] == expected).all(), overhead[["runtime", "workload", "metric"]]
    assert (overhead["n"] == scenario.quickened().repetitions).all(), overhead["n"]
    left = listening_ports() - before
    assert not left, f"still listening after the run: {sorted(left)}"
