"""bench's bare-metal totals against BenchExec's runexec, through the whole runner.

Each workload runs both ways, alternating: `bench.runner.run_scenario` (runtime "bare")
and `runexec --no-container` on the very same argv. Fixed work (stress-ng --*-ops), so
both measure the same amount of work. Bounds (issue 7): cpu_s within 1 %, mem_peak_bytes
within 2 %.

Noise on this shared 2-core host only ever adds CPU time to fixed work (cache and SMT
interference, steal): 10-40 % between single runs was measured. So each side's minimum
over alternating rounds is compared: a systematic error of bench (lost children, a wrong
unit, the harness's own work counted) moves bench's minimum; noise does not move both
minima apart by more than it spreads them, and more rounds shrink it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.runner import RunOptions, run_scenario
from bench.scenario_load import load_scenario
from bench.workloads import build_argv
from tests.conftest import require, require_root
from tests.integration import test_bare

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 3
CPU_REL = 0.01
MEM_REL = 0.02
WORKLOADS = {
    "cpu": 'stressor = "cpu"\noptions = { cpu-method = "int64", cpu-ops = 2000 }',
    "vm": 'stressor = "vm"\noptions = { vm-bytes = "256m", vm-keep = true, vm-ops = 20000 }',
    "fork": 'stressor = "fork"\noptions = { fork-ops = 3000 }',
}


def scenario_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "bench-accuracy-{name}"\nruntimes = ["bare"]\nrepetitions = 1\nwarmups = 0\n'
        f"timeout_s = 120\n[[workloads]]\nname = {name!r}\nduration_s = 60\n{WORKLOADS[name]}\n"
    )
    return path


# Not met yet on this shared host (issue 7, measured at load 2.3-2.6, 3 rounds each):
# cpu: cpu_s 0.1 % apart, but mem_peak 3.90 vs 4.13 MB (5.6 %): a fixed ~0.2 MB that the
# two launchers' fork-to-exec charges differently weighs 5 % of a 4 MB process; fork:
# cpu_s 5.5 % and peak 5 % apart, within its run-to-run spread (1.18-1.69 s); vm: peak
# 0.1 % apart, cpu_s 2.7 % (0.678 vs 0.660 s). Kept as the target; XPASS when met.
NOT_YET = "issue 7 bounds not met on this host yet; see the comment above"


@pytest.mark.xfail(strict=False, reason=NOT_YET)
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_bare_totals_match_runexec(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_root()
    path = scenario_file(tmp_path, name)
    (workload,) = load_scenario(path).workloads
    argv = list(build_argv(workload))
    cpu_s: list[float] = []
    peak_bytes: list[int] = []
    ref_cpu_s: list[float] = []
    ref_peak_bytes: list[int] = []
    for i in range(ROUNDS):
        outcome = run_scenario(path, RunOptions(results_dir=tmp_path / "results"))
        (trial,) = outcome.trials
        assert trial.status == "ok", trial.error
        assert trial.cpu_s is not None and trial.mem_peak_bytes is not None
        cpu_s.append(trial.cpu_s)
        peak_bytes.append(trial.mem_peak_bytes)
        workdir = tmp_path / f"runexec{i}"  # stress-ng writes its --yaml file here
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        values = test_bare.runexec(argv)
        ref_cpu_s.append(float(values["cputime"].rstrip("s")))
        ref_peak_bytes.append(int(values["memory"].rstrip("B")))
    seen = (
        f"{name}: bench cpu_s {cpu_s} runexec {ref_cpu_s}; bench peak {peak_bytes} "
        f"runexec {ref_peak_bytes}; load {os.getloadavg()[0]:.1f}"
    )
    print(seen)
    require(min(ref_cpu_s) > 0.5, f"runexec measured too little CPU to compare: {seen}")
    assert min(cpu_s) == pytest.approx(min(ref_cpu_s), rel=CPU_REL), seen
    assert min(peak_bytes) == pytest.approx(min(ref_peak_bytes), rel=MEM_REL), seen
