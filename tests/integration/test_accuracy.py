"""bench's bare-metal totals against BenchExec's runexec, through the whole runner.

Each workload runs both ways, alternating: `bench.runner.run_scenario` (runtime "bare")
and `runexec --no-container` on the very same argv. Fixed work (stress-ng --*-ops), so
both measure the same amount of work. Target: cpu_s within 1 %, mem_peak_bytes
within 2 % (bounds asserted on this noisy host: CPU_REL, MEM_REL). Both read the same
kernel counters (v1: cpuacct.usage and memory.max_usage_in_bytes, which equals
memsw.max_usage_in_bytes without swap), and each launcher's own charge between fork and
exec is below what they resolve: /bin/true costs ~2 ms of CPU and peaks at exactly one
charge batch (below) under either.

Noise on this shared 2-core host moves the CPU time of fixed work by 10-40 % between
single runs (interference from the other tenants' loads), in both launchers and in
stress-ng's own rusage of the same runs alike; mostly upwards, but rare runs are also
faster than the usual floor (vm: 0.56 s once, against 0.63-0.66 s). So each side's
minimum over alternating rounds is compared: a systematic error of bench (lost children,
a wrong unit, the harness's own work counted) moves bench's minimum; noise moves the two
minima apart by less than it spreads single runs, and more rounds shrink it. Each round
swaps which launcher goes first, so a drift of the host's state does not favour one side.

The memory counter cannot resolve 2 % of a small process: the kernel charges a cgroup in
per-CPU batches of MEMCG_CHARGE_BATCH pages and the peak includes the unused rest of
each batch, "a fuzz value for efficient access" (Documentation/admin-guide/cgroup-v1/
memory.rst, 5.5). /bin/true peaks at exactly 256 KiB (64 pages) under either launcher
here, and one launcher's peaks of the same ~4 MB stress-ng run spread 3.90-4.67 MB. So
peaks must agree within 2 % or within that resolution, measured in the same session as
runexec's smallest peak for /bin/true.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.runner import RunOptions, run_scenario
from bench.scenario_load import load_scenario
from bench.workloads import build_argv
from tests.helpers import require, require_root, runexec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 3 rounds left the minima 3-11 % apart; 15 rounds (the figures below) took ~2 min, which
# pushed the whole CI run to 14.4 of its 15 minutes: 10 rounds take ~65 s.
ROUNDS = 10
MIN_CPU_S = 0.2  # each workload takes 0.6-1.7 s of CPU here
# The bounds asserted are what this shared host's noise stays within, with room; each
# test prints the measured gap, which is the figure to quote. A quiet dedicated host meets
# 1 % on CPU time, but here the minima of 10-15 alternating rounds landed up to 10.3 %
# apart (bench vs runexec, runs at load 0.8-2.5: cpu +0.68 / -1.66 / +1.51 / -0.43 %, vm
# +1.88 / -10.3 / +1.75 / +0.68 %, fork -7.9 / -1.4 / +1.06 / +6.18 %), either side lower:
# the host's noise, not bench's error (module docstring). 15 % still catches a systematic
# one: lost children (fork's workers are most of its CPU) or a wrong unit.
CPU_REL = 0.15
# Peaks within 2 %, or within the counter's resolution. The fork stressor's peak is
# timing-dependent: how many of its short-lived children, with kernel memory that is freed
# only after reaping (and an RCU grace period), are charged at the same moment. 7.7-17 MB
# between runs of either launcher; the minima were -2.3 / +7.6 / -0.9 / -1.0 % apart.
MEM_REL = {"cpu": 0.02, "vm": 0.02, "fork": 0.15}
WORKLOADS = {
    "cpu": 'stressor = "cpu"\noptions = { cpu-method = "int64", cpu-ops = 2000 }',
    "vm": 'stressor = "vm"\noptions = { vm-bytes = "256m", vm-keep = true, vm-ops = 20000 }',
    "fork": 'stressor = "fork"\noptions = { fork-ops = 3000 }',
}


@dataclass
class Totals:
    """Each launcher's cpu_s and peak over the rounds, in run order."""

    name: str
    cpu_s: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)
    ref_cpu_s: list[float] = field(default_factory=list)
    ref_peak_bytes: list[int] = field(default_factory=list)

    def describe(self) -> str:
        cpu_s, ref_cpu_s = min(self.cpu_s), min(self.ref_cpu_s)
        peak, ref_peak = min(self.peak_bytes), min(self.ref_peak_bytes)
        return (
            f"{self.name}: min cpu_s bench {cpu_s:.4f} runexec {ref_cpu_s:.4f} "
            f"({cpu_s / ref_cpu_s - 1:+.2%}); min peak bench {peak} runexec {ref_peak} "
            f"({peak / ref_peak - 1:+.2%}); load {os.getloadavg()[0]:.1f}; "
            f"bench cpu_s {[round(x, 3) for x in self.cpu_s]} "
            f"runexec {[round(x, 3) for x in self.ref_cpu_s]}; "
            f"bench peak {self.peak_bytes} runexec {self.ref_peak_bytes}"
        )


def scenario_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "bench-accuracy-{name}"\nruntimes = ["bare"]\nrepetitions = 1\nwarmups = 0\n'
        f"timeout_s = 120\n[[workloads]]\nname = {name!r}\nduration_s = 60\n{WORKLOADS[name]}\n"
    )
    return path


def measure(name: str, tmp_path: Path) -> Totals:
    """ROUNDS alternating runs of workload `name` through bench's runner and runexec."""
    path = scenario_file(tmp_path, name)
    (workload,) = load_scenario(path).workloads
    argv = list(build_argv(workload))
    totals = Totals(name)

    def bench_once() -> None:
        outcome = run_scenario(path, RunOptions(results_dir=tmp_path / "results"))
        (trial,) = outcome.trials
        if trial.status != "ok" or trial.cpu_s is None or trial.mem_peak_bytes is None:
            pytest.fail(f"bench's {name} trial: {trial.status}, {trial.error}")
        totals.cpu_s.append(trial.cpu_s)
        totals.peak_bytes.append(trial.mem_peak_bytes)

    def runexec_once(i: int) -> None:
        workdir = tmp_path / f"runexec{i}"  # stress-ng writes its --yaml file here
        workdir.mkdir()
        values = runexec(argv, cwd=workdir)
        totals.ref_cpu_s.append(float(values["cputime"].rstrip("s")))
        totals.ref_peak_bytes.append(int(values["memory"].rstrip("B")))

    for i in range(ROUNDS):
        if i % 2:
            runexec_once(i)
            bench_once()
        else:
            bench_once()
            runexec_once(i)
    print(totals.describe())
    return totals


@pytest.fixture(scope="module")
def totals(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Totals]:
    """Measures each workload once for both tests below.

    A failed measurement is measured once and fails each test that needs it.
    """
    require_root()
    measured: dict[str, Totals | None] = {}

    def get(name: str) -> Totals:
        if name not in measured:
            measured[name] = None  # a failed measurement fails the first test, not twice
            measured[name] = measure(name, tmp_path_factory.mktemp(f"accuracy-{name}"))
        result = measured[name]
        if result is None:
            pytest.fail(f"measuring {name} failed in an earlier test")
        return result

    return get


@pytest.fixture(scope="module")
def memory_resolution_bytes() -> int:
    """The smallest peak runexec reports at all (for /bin/true): the counter's resolution."""
    require_root()
    return min(int(runexec(["/bin/true"])["memory"].rstrip("B")) for _ in range(3))


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_memory_peak_matches_runexec(
    name: str, totals: Callable[[str], Totals], memory_resolution_bytes: int
) -> None:
    measured = totals(name)
    peak, ref_peak = min(measured.peak_bytes), min(measured.ref_peak_bytes)
    bound_bytes = max(MEM_REL[name] * ref_peak, memory_resolution_bytes)
    seen = f"{measured.describe()}; resolution {memory_resolution_bytes} B"
    assert abs(peak - ref_peak) <= bound_bytes, seen


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_cpu_time_matches_runexec(name: str, totals: Callable[[str], Totals]) -> None:
    measured = totals(name)
    seen = measured.describe()
    # A guard against a runexec that measured nothing, not against a fast round: one vm
    # round took 0.497 s of CPU against the usual 0.61-0.67 s (CI, load 0.9).
    enough = statistics.median(measured.ref_cpu_s) > MIN_CPU_S
    require(enough, f"runexec measured too little CPU to compare: {seen}")
    assert min(measured.cpu_s) == pytest.approx(min(measured.ref_cpu_s), rel=CPU_REL), seen
