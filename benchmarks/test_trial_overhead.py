"""bench's own cost around the workload: per trial, and from `bench run` to the first trial.

- per trial: a bare run of 10 `/bin/true` trials in this process (after one warm-up run
  that pays the one-time imports); the runner's time minus the runtime's start, wait and
  stop = what bench itself adds per trial. Target <= 50 ms.
- per service trial: a bare run of 5 one-second sockperf ping-pong trials (after a warm-up
  run); the runner's time minus the server's start, readiness wait and stop and minus the
  load generator's process (sockperf takes 3.3 s for `-t 1`: its 400 ms warm-up and exit)
  = what bench adds around a service trial (cgroup readers, parsing the client's log, the
  histogram, the result row). Target <= 100 ms.
- `bench run` to the first trial: a fresh `python -m bench run` whose workload is
  `/bin/date +%s.%N`, so the trial records its own start time. Target < 0.5 s. Heavy
  modules (pandas, pyarrow, docker, podman, matplotlib, scipy) must not be loaded yet.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench import runner
from bench.runtimes.bare import BareHandle, BareRuntime
from benchmarks.cgroup_fixtures import require_cgroups
from tests.helpers import bench

pytestmark = pytest.mark.benchmark(group="bench's own cost")

TRIALS = 10
MAX_PER_TRIAL_S = 0.050
SERVICE_TRIALS = 5
MAX_PER_SERVICE_TRIAL_S = 0.100  # 35 ms measured (2026-12-03, load 2.6)
MAX_FIRST_TRIAL_S = 0.5
HEAVY = ("pandas", "pyarrow", "docker", "podman", "matplotlib", "scipy")
ROOT = Path(__file__).resolve().parents[1]


def scenario(tmp_path: Path, command: list[str], repetitions: int) -> Path:
    path = tmp_path / f"bench-cost-{repetitions}.toml"
    path.write_text(
        f'name = "bench-cost"\nruntimes = ["bare"]\nrepetitions = {repetitions}\nwarmups = 0\n'
        f'[[workloads]]\nname = "true"\ncommand = {json.dumps(command)}\n'
    )
    return path


def stopwatch(spent: dict[str, float], key: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func`, adding its wall time to spent[key] (instrumentation: the real method runs)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - started

    return wrapper


def test_cost_per_trial(
    benchmark: BenchmarkFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_cgroups()
    runner.run_scenario(scenario(tmp_path, ["/bin/true"], 1), runner.RunOptions(tmp_path / "w"))
    spent = {"runtime": 0.0, "execute": 0.0}
    # Instrumentation only: the real methods run; their time is attributed to the runtime.
    monkeypatch.setattr(BareRuntime, "start", stopwatch(spent, "runtime", BareRuntime.start))
    monkeypatch.setattr(BareHandle, "wait", stopwatch(spent, "runtime", BareHandle.wait))
    monkeypatch.setattr(BareHandle, "stop", stopwatch(spent, "runtime", BareHandle.stop))
    monkeypatch.setattr(runner, "_execute", stopwatch(spent, "execute", runner._execute))
    path = scenario(tmp_path, ["/bin/true"], TRIALS)
    cpu0 = time.process_time()

    def run() -> runner.RunOutcome:
        return runner.run_scenario(path, runner.RunOptions(tmp_path / "m"))

    outcome = benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    cpu_s = time.process_time() - cpu0
    assert outcome.status == "complete" and len(outcome.trials) == TRIALS
    per_trial_s = (spent["execute"] - spent["runtime"]) / TRIALS
    info = {
        "trials": TRIALS,
        "bench_ms_per_trial": round(per_trial_s * 1000, 1),
        "runtime_ms_per_trial": round(spent["runtime"] / TRIALS * 1000, 1),
        "whole_run_cpu_ms_per_trial": round(cpu_s / TRIALS * 1000, 1),
        "load_1m": os.getloadavg()[0],
    }
    benchmark.extra_info.update(info)
    print(f"\nper trial: {info}")
    assert per_trial_s <= MAX_PER_TRIAL_S, info


def service_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "bench-cost-service.toml"
    path.write_text(
        f'name = "bench-cost-service"\nruntimes = ["bare"]\nnetwork_modes = ["host"]\n'
        f"repetitions = {SERVICE_TRIALS}\n"
        'warmups = 0\n[[workloads]]\nname = "tcp-rr"\nservice = "tcp-rr"\nserver_cpus = "0"\n'
        'load = { connections = 1, duration_s = 1, client_cpus = "1" }\n'
    )
    return path


def test_cost_per_service_trial(
    benchmark: BenchmarkFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_cgroups()
    from bench import loadgen, service

    spent = {"runtime": 0.0, "execute": 0.0, "ready": 0.0, "load": 0.0}
    for owner, name, key in (
        (BareRuntime, "start", "runtime"),
        (BareHandle, "wait", "runtime"),
        (BareHandle, "stop", "runtime"),
        (service, "wait_ready", "ready"),
        (loadgen, "run_child", "load"),
        (runner, "_execute", "execute"),
    ):
        monkeypatch.setattr(owner, name, stopwatch(spent, key, getattr(owner, name)))
    path = service_scenario(tmp_path)
    runner.run_scenario(path, runner.RunOptions(tmp_path / "warm"))  # one-time imports
    spent.update(dict.fromkeys(spent, 0.0))

    def run() -> runner.RunOutcome:
        return runner.run_scenario(path, runner.RunOptions(tmp_path / "s"))

    outcome = benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    assert outcome.status == "complete" and len(outcome.trials) == SERVICE_TRIALS
    assert all(t.requests for t in outcome.trials)
    around = spent["runtime"] + spent["ready"] + spent["load"]
    per_trial_s = (spent["execute"] - around) / SERVICE_TRIALS
    info = {
        "trials": SERVICE_TRIALS,
        "bench_ms_per_service_trial": round(per_trial_s * 1000, 1),
        "server_start_ready_stop_ms_per_trial": round(
            (spent["runtime"] + spent["ready"]) / SERVICE_TRIALS * 1000, 1
        ),
        "load_ms_per_trial": round(spent["load"] / SERVICE_TRIALS * 1000, 1),
        "load_1m": os.getloadavg()[0],
    }
    benchmark.extra_info.update(info)
    print(f"\nper service trial: {info}")
    assert per_trial_s <= MAX_PER_SERVICE_TRIAL_S, info


PROBE = """
import sys, bench.runtimes.bare as bare
start = bare.BareRuntime.start
def probe(self, spec):
    heavy = [m for m in {heavy!r} if m in sys.modules]
    open({out!r}, "w").write(" ".join(heavy))
    return start(self, spec)
bare.BareRuntime.start = probe
from bench.cli import main
main()
"""


def test_time_to_first_trial(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    require_cgroups()
    path = scenario(tmp_path, ["/bin/date", "+%s.%N"], 1)
    delays: list[float] = []

    def launch() -> None:
        results = tmp_path / f"r{len(delays)}"
        launched = time.time()
        done = bench("run", str(path), "--results-dir", str(results), cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        (stdout,) = results.glob("*/trials/*/stdout.txt")
        delays.append(float(stdout.read_text()) - launched)

    benchmark.pedantic(launch, rounds=5, iterations=1)  # type: ignore[no-untyped-call]
    loaded = tmp_path / "loaded.txt"
    code = PROBE.format(heavy=HEAVY, out=str(loaded))
    subprocess.run(
        [sys.executable, "-c", code, "run", str(path), "--results-dir", str(tmp_path / "p")],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    importtime = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    cli_us = next(
        int(line.split("|")[1]) for line in importtime.splitlines() if line.endswith("bench.cli")
    )
    median = statistics.median(delays)
    info = {
        "first_trial_s": [round(d, 3) for d in delays],
        "median_s": round(median, 3),
        "heavy_before_first_trial": loaded.read_text().split(),
        "import_bench_cli_ms": round(cli_us / 1000, 1),
        "load_1m": os.getloadavg()[0],
    }
    benchmark.extra_info.update(info)
    print(f"\nbench run to first trial: {info}")
    assert info["heavy_before_first_trial"] == [], info
    assert median < MAX_FIRST_TRIAL_S, info
