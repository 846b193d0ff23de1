"""Workload faults through `bench run`: each trial gets its status and output tail, the run goes on.

Non-zero exit, death by signal, OOM kill and a hang past the trial timeout, under bare
metal and docker (when it answers), beside a workload that succeeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.analysis import load_run
from tests.e2e import reliability as rel
from tests.helpers import bench, require_root

SCENARIO = """\
name = "bench-workload-faults"
runtimes = {runtimes}
repetitions = 1
warmups = 0
sample_interval_ms = 100
timeout_s = 3

[limits]
memory = "64m"
pids = 64

[[workloads]]
name = "fine"
command = ["/bin/busybox", "sh", "-c", "echo all-good"]

[[workloads]]
name = "exit3"
command = ["/bin/busybox", "sh", "-c", "echo out-line; echo err-line >&2; exit 3"]

[[workloads]]
name = "segv"
command = ["/bin/busybox", "sh", "-c", "echo before-crash; kill -SEGV $$"]

[[workloads]]
name = "oom"
stressor = "vm"
duration_s = 1
options = {{ vm-bytes = "256m", vm-keep = true }}

[[workloads]]
name = "hang"
command = ["/bin/busybox", "sh", "-c", "echo hanging; /bin/busybox sleep 30"]
"""

# workload -> (status, exit code or None when there is none, text in the output tail)
EXPECTED = {
    "fine": ("ok", 0, None),
    "exit3": ("failed", 3, "err-line"),
    "segv": ("failed", 128 + 11, "before-crash"),
    "oom": ("oom", None, None),
    "hang": ("timeout", None, "hanging"),
}


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    require_root()
    runtimes = [name for name, why_not in rel.answering(("bare", "docker")).items() if not why_not]
    directory = tmp_path_factory.mktemp("workload-faults")
    scenario = directory / "faults.toml"
    scenario.write_text(SCENARIO.format(runtimes=json.dumps(runtimes)))
    done = bench("run", str(scenario), "--results-dir", str(directory / "r"), "--json")
    assert done.returncode == 0, done.stderr  # faults are measurements: the run is complete
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)["status"] == "complete"
    return Path(json.loads(done.stdout)["run_dir"]), runtimes, done.stderr


@pytest.mark.parametrize("workload", list(EXPECTED))
def test_fault_is_recorded_per_trial(workload: str, fault_run: tuple[Path, list[str], str]) -> None:
    run_dir, runtimes, stderr = fault_run
    trials = load_run(run_dir).trials
    rows = trials[trials["workload"] == workload]
    assert sorted(rows["runtime"]) == sorted(runtimes)  # every runtime ran it: the run went on
    status, exit_code, tail = EXPECTED[workload]
    for row in rows.itertuples():
        assert row.status == status, (row.runtime, row.status, row.error, row.output_tail)
        if exit_code is not None:
            assert row.exit_code == exit_code, (row.runtime, row.exit_code)
        if tail is not None:
            assert tail in str(row.output_tail), (row.runtime, row.output_tail)
        if status == "ok":
            assert row.error == "" and row.output_tail == ""
        else:
            assert row.error, row
            assert f"{row.trial_id}: {status}" in " ".join(stderr.split())
    if workload == "oom":
        assert all(rows["oom_kills"] > 0)
        assert all(rows["mem_peak_bytes"] <= 64 << 20)
    if workload == "hang":
        assert all(rows["wall_s"] < 10)  # killed at the 3 s timeout, not after 30 s
