"""Workload catalogue: argv, binaries, metric parsing (fixtures), and real stress-ng runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.errors import InputError
from bench.scenario import WorkloadModel
from bench.workloads import (
    METRICS_FILE,
    Throughput,
    binaries,
    build_argv,
    last_lines,
    parse_metrics,
)
from tests.helpers import require

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stress-ng"
STRESS_NG = shutil.which("stress-ng")


def stressor(name: str = "cpu", **fields: Any) -> WorkloadModel:
    return WorkloadModel(name="w", stressor=name, **fields)


def need_stress_ng() -> str:
    require(STRESS_NG is not None, "stress-ng is not installed (apt-get install stress-ng)")
    assert STRESS_NG is not None
    return STRESS_NG


def test_stressor_argv_shape() -> None:
    need_stress_ng()
    argv = build_argv(stressor("cpu", workers=2, duration_s=3.0, options={"cpu-method": "fft"}))
    assert argv == (
        str(Path(str(STRESS_NG)).absolute()),
        "--cpu",
        "2",
        "--timeout",
        "3s",
        "--metrics",
        "--yaml",
        "metrics.yaml",
        "--cpu-method",
        "fft",
    )
    assert os.path.isabs(argv[0])
    assert not os.path.isabs(argv[argv.index("--yaml") + 1])  # valid in any io dir


def test_option_values_bools_and_numbers() -> None:
    need_stress_ng()
    argv = build_argv(
        stressor("vm", options={"vm-keep": True, "vm-hang": False, "vm-bytes": 1048576, "x": 0.5})
    )
    assert "--vm-keep" in argv
    assert "--vm-hang" not in argv
    assert argv[argv.index("--vm-bytes") + 1] == "1048576"
    assert argv[argv.index("--x") + 1] == "0.5"
    assert "True" not in argv and "False" not in argv


def test_oomable_by_default_for_memory_stressors_unless_turned_off() -> None:
    need_stress_ng()
    for name in ("vm", "bigheap", "malloc"):
        assert "--oomable" in build_argv(stressor(name))
    assert "--oomable" not in build_argv(stressor("cpu"))
    assert "--oomable" not in build_argv(stressor("vm", options={"oomable": False}))


def test_vm_madvise_is_pinned_not_random_unless_the_scenario_says() -> None:
    need_stress_ng()
    argv = build_argv(stressor("vm"))
    assert argv[argv.index("--vm-madvise") + 1] == "normal"
    argv = build_argv(stressor("vm", options={"vm-madvise": "hugepage"}))
    assert argv.count("--vm-madvise") == 1
    assert argv[argv.index("--vm-madvise") + 1] == "hugepage"
    assert "--vm-madvise" not in build_argv(stressor("cpu"))


def test_scratch_stressors_write_in_the_io_dir() -> None:
    need_stress_ng()
    for name in ("hdd", "iomix"):
        argv = build_argv(stressor(name))
        assert argv[argv.index("--temp-path") + 1] == "."
    assert "--temp-path" not in build_argv(stressor("cpu"))


def test_command_argv_resolves_the_program() -> None:
    workload = WorkloadModel(name="c", command=["sleep", "1"])
    argv = build_argv(workload)
    assert argv == (shutil.which("sleep"), "1")
    assert binaries(workload) == [Path(argv[0])]


def test_command_absolute_program_kept() -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    assert build_argv(WorkloadModel(name="c", command=[sleep, "x y"])) == (sleep, "x y")


@pytest.mark.parametrize("program", ["bench-no-such-program", "/nonexistent/bin/x", "/etc/passwd"])
def test_command_program_not_found(program: str) -> None:
    with pytest.raises(InputError, match=f"workload 'c': program '{program}' is not an executable"):
        build_argv(WorkloadModel(name="c", command=[program]))


def test_binaries_of_a_stressor_is_stress_ng() -> None:
    need_stress_ng()
    paths = binaries(stressor("cpu"))
    assert paths == [Path(str(STRESS_NG)).absolute()]
    assert all(path.is_absolute() and path.is_file() for path in paths)


def test_parse_real_single_stressor_yaml(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "metrics-cpu.yaml", tmp_path / METRICS_FILE)
    assert parse_metrics(tmp_path, stressor("cpu")) == Throughput(1630.532986, "bogo-ops/s")


def test_parse_real_two_stressor_yaml_sums(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "metrics-cpu-vm.yaml", tmp_path / METRICS_FILE)
    result = parse_metrics(tmp_path, stressor("cpu"))
    assert result is not None
    assert result.value == pytest.approx(196.674493 + 2085.729029)
    assert result.unit == "bogo-ops/s"


def test_command_workload_has_no_metric(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "metrics-cpu.yaml", tmp_path / METRICS_FILE)
    assert parse_metrics(tmp_path, WorkloadModel(name="c", command=["true"])) is None


@pytest.mark.parametrize(
    "content",
    [
        None,  # missing file
        b"",
        b"\xff\xfe\x00garbage",
        b"[unclosed",
        b"just a string",
        b"metrics: 3",
        b"metrics:\n  - stressor: cpu\n",
        b"metrics:\n  - bogo-ops-per-second-real-time: fast\n",
        b"metrics:\n  - bogo-ops-per-second-real-time: .nan\n",
        b"metrics:\n  - bogo-ops-per-second-real-time: -1\n",
        b"metrics:\n  - bogo-ops-per-second-real-time: true\n",
        b"!!python/object/apply:os.system ['echo pwned']",
        b"[" * 5000,
        b"a: &a [*a]",
    ],
)
def test_garbage_metrics_give_none(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / METRICS_FILE).write_bytes(content)
    assert parse_metrics(tmp_path, stressor("cpu")) is None


def test_metrics_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).mkdir()
    assert parse_metrics(tmp_path, stressor("cpu")) is None


def test_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "stderr.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100)) + b"bad \xff byte")
    assert last_lines(path, 3) == ["line 98", "line 99", "bad \ufffd byte"]
    assert last_lines(path, 0) == []
    assert last_lines(tmp_path / "missing.txt") == []


def test_last_lines_is_bounded_on_huge_files(tmp_path: Path) -> None:
    path = tmp_path / "stdout.txt"
    with path.open("wb") as file:
        file.write(b"x" * (8 << 20))  # one 8 MiB line, then a short tail
        file.write(b"\nend 1\nend 2\n")
    started = time.perf_counter()
    lines = last_lines(path, 5)
    assert lines == ["end 1", "end 2"]  # the cut partial line is dropped
    assert time.perf_counter() - started < 0.5


# Each stressor bench supports must run here with bench's argv and leave a parseable metric.
REAL_RUNS = {
    "cpu": {},
    "vm": {"vm-bytes": "32m", "vm-keep": True},
    "matrix": {},
    "fork": {},
    # stress-ng sizes stream's arrays from the L3 size; this VM reports 480 MiB and a 1 s
    # run took 18.5 s and 5.9 GB (README, "Stressors").
    "stream": {"stream-l3-size": "32m"},
    "hdd": {"hdd-bytes": "8m"},
    "iomix": {"iomix-bytes": "8m"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_RUNS))
def test_stressor_really_runs_and_reports(tmp_path: Path, name: str) -> None:
    need_stress_ng()
    workload = stressor(name, duration_s=1.0, options=REAL_RUNS[name])
    argv = build_argv(workload)
    # Without bench's --timeout stress-ng runs on for a day: the 30 s timeout fails the test.
    # No tighter bound: a 1 s run can take several seconds here with the other core busy.
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    result = parse_metrics(tmp_path, workload)
    assert result is not None, (tmp_path / METRICS_FILE).read_text()
    assert result.unit == "bogo-ops/s"
    assert result.value > 0
    # scratch files stay in (and are cleaned from) the io dir; nothing else is left
    assert {p.name for p in tmp_path.iterdir()} == {METRICS_FILE}
