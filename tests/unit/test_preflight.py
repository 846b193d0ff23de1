"""bench.preflight on scenario files, against this host and against a made-up 1-CPU host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.preflight import HostLimits, check_scenario, parse_cpuset, pids_needed
from bench.scenario import WorkloadModel
from bench.scenario_load import SCENARIOS_DIR, ScenarioError, load_scenario
from tests.helpers import require

ONE_CPU = HostLimits(cpus=frozenset({0}), memory_bytes=4 << 30)

ISOLATION = """\
name = "iso"
runtimes = ["bare"]

[[workloads]]
name = "victim"
stressor = "cpu"

[isolation]
placements = ["shared", "separate"]

[[isolation.aggressors]]
name = "hog"
kind = "memory"
limits = {{ memory = "{memory}", pids = 64 }}
"""


def scenario_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(SCENARIOS_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_pass_on_a_two_cpu_host(path: Path) -> None:
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    # This VM's CPU reports a 480 MiB L3, which stress-ng's stream sizes its arrays from.
    host = HostLimits(frozenset({0, 1}), 4 << 30, l3_cache_bytes=480 << 20)
    scenario = load_scenario(path)
    check_scenario(scenario, path, host)
    check_scenario(scenario.quickened(), path, host)


def test_separate_placement_on_a_one_cpu_host(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, ISOLATION.format(memory="128m"))
    with pytest.raises(ScenarioError) as caught:
        check_scenario(load_scenario(path), path, ONE_CPU)
    assert str(caught.value).startswith(f"{path}:9: isolation.placements: placement 'separate'")
    assert "pins to CPU 1 and this host has no CPU 1 (its CPUs: 0)" in str(caught.value)


def test_aggressor_limits_are_checked_where_they_are_written(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, ISOLATION.format(memory="8g"))
    with pytest.raises(ScenarioError, match="more than this host's memory") as caught:
        check_scenario(load_scenario(path), path, HostLimits(frozenset({0, 1}), 4 << 30))
    assert str(caught.value).startswith(f"{path}:14: isolation.aggressors[0].limits.memory: 8.00")


def test_cpus_above_the_host_limit_nothing(tmp_path: Path) -> None:
    text = 'name = "c"\n[limits]\ncpus = 2\n[[workloads]]\nname = "w"\nstressor = "cpu"\n'
    path = scenario_file(tmp_path, text)
    with pytest.raises(ScenarioError, match=r"s\.toml:3: limits\.cpus: 2 CPUs is more than"):
        check_scenario(load_scenario(path), path, ONE_CPU)


def test_missing_command_program_is_located(tmp_path: Path) -> None:
    text = 'name = "c"\n[[workloads]]\nname = "w"\ncommand = ["no-such-program-x", "1"]\n'
    path = scenario_file(tmp_path, text)
    with pytest.raises(ScenarioError, match=r"s\.toml:4: workloads\[0\]\.command: .*not an exec"):
        check_scenario(load_scenario(path), path, ONE_CPU)


def test_parse_cpuset() -> None:
    assert parse_cpuset("0-2,5") == [0, 1, 2, 5]
    assert parse_cpuset("3") == [3]
    assert parse_cpuset("") == []


def test_pids_needed_grows_with_workers() -> None:
    one = WorkloadModel(name="a", stressor="cpu", workers=1)
    four = WorkloadModel(name="b", stressor="cpu", workers=4)
    forking = WorkloadModel(name="c", stressor="vm", workers=4)
    assert pids_needed(four) - pids_needed(one) == 3
    assert pids_needed(forking) - pids_needed(four) == 4  # --oomable: one more child each


def test_aggressor_options_go_through_stress_ng(tmp_path: Path) -> None:
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    text = ISOLATION.format(memory="128m")
    text += '\n[[isolation.aggressors]]\nname = "spin"\nkind = "cpu"\n'
    text += 'options = { cpu-method = "bogus" }\n'
    path = scenario_file(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        check_scenario(load_scenario(path), path, HostLimits(frozenset({0, 1}), 4 << 30))
    message = str(caught.value)
    assert message.startswith(f"{path}:19: isolation.aggressors[1].options.cpu-method: stress-ng")
    assert "cpu-method must be one of" in message


STREAM = 'name = "s"\n[limits]\nmemory = "1g"\n[[workloads]]\nname = "bw"\nstressor = "stream"\n'


def test_stream_arrays_past_the_memory_limit_are_refused(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, STREAM)
    big_l3 = HostLimits(frozenset({0, 1}), 4 << 30, l3_cache_bytes=480 << 20)
    with pytest.raises(ScenarioError) as caught:
        check_scenario(load_scenario(path), path, big_l3)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: limits.memory: workload 'bw' is stress-ng's stream")
    assert "here 5760 MiB" in message and "stream-l3-size" in message
    # A real L3 of 32 MiB (384 MiB of arrays) fits, and so does the option on the big one.
    real_l3 = HostLimits(frozenset({0, 1}), 4 << 30, l3_cache_bytes=32 << 20)
    check_scenario(load_scenario(path), path, real_l3)
    path.write_text(STREAM + 'options = { stream-l3-size = "32m" }\n')
    check_scenario(load_scenario(path), path, big_l3)
    path.write_text(STREAM + 'options = { stream-l3-size = "100m" }\n')  # 1200 MiB > 1 GiB
    with pytest.raises(ScenarioError, match="here 1200 MiB"):
        check_scenario(load_scenario(path), path, big_l3)


def test_host_l3_is_read_as_lscpu_reads_it() -> None:
    from bench.preflight import host_limits

    require(shutil.which("lscpu") is not None, "lscpu (util-linux) is not installed")
    done = subprocess.run(
        ["lscpu", "--caches=NAME,ONE-SIZE", "--bytes"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    sizes = dict(line.split() for line in done.stdout.splitlines()[1:] if line.strip())
    require("L3" in sizes, "this CPU reports no level 3 cache")
    assert host_limits().l3_cache_bytes == int(sizes["L3"])
