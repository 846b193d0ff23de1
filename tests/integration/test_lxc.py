"""LxcRuntime with the real lxc-* tools: limits hold, counters survive, nothing is left."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from bench.errors import BenchError
from bench.runtimes._container import ContainerHandle
from bench.runtimes.lxc import LOG_FILE, LxcRuntime
from bench.spec import Limits
from tests.conftest import require, require_root
from tests.integration import container_contract as contract
from tests.integration.container_contract import io_dir, started

if TYPE_CHECKING:
    from bench.image import WorkloadImage

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["io_dir", "started"]  # fixtures shared with the other runtimes' tests


@pytest.fixture(scope="module")
def lxc_runtime(
    workload_image: WorkloadImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LxcRuntime]:
    """LxcRuntime on a private lxcpath; teardown removes and asserts no leftovers."""
    require_root()
    require(shutil.which("lxc-execute") is not None, "lxc is not installed (apt-get install lxc)")
    lxcpath = tmp_path_factory.mktemp("lxcpath") / "bench-lxc"
    runtime = LxcRuntime(lxcpath=lxcpath)
    availability = runtime.available()
    require(availability.ok, availability.reason)
    runtime.prepare(workload_image)
    yield runtime
    runtime.close()
    assert not lxcpath.exists(), "close() left the empty private lxcpath"
    runtime.remove_leftovers()
    left = runtime.leftovers()
    assert left == [], f"lxc objects left behind by the tests: {left}"


def test_cpu_workload_runs_and_writes_metrics(
    lxc_runtime: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    handle = contract.check_cpu_workload(lxc_runtime, io_dir, started)
    # Stopped: its config and directory in the lxcpath are gone, its monitor too.
    assert not any(handle.name in item for item in lxc_runtime.leftovers())
    assert lxc_runtime.footprint_pids() == []


def test_cpu_quota_half_a_cpu(
    lxc_runtime: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    contract.check_cpu_quota_half(lxc_runtime, io_dir, started)


def test_memory_limit_oom_kills_are_counted(
    lxc_runtime: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    contract.check_oom_counted(lxc_runtime, io_dir, started)


def test_cgroup_is_the_one_lxc_reports(
    lxc_runtime: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    spec = contract.make_spec(io_dir, ["/bin/busybox", "sleep", "30"], limits=Limits(pids=64))
    handle = contract.start(lxc_runtime, started, spec)
    info = subprocess.run(
        ["lxc-info", "-P", str(lxc_runtime.lxcpath), "-n", spec.name, "-p", "-H"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(info.stdout) == handle.pid
    # lxc-execute runs lxc-init as the container's PID 1 and the wrapper as its child.
    children = psutil.Process(handle.pid).children()
    assert [child.cmdline()[:3] for child in children] == [["/bin/busybox", "sh", "-c"]]
    for controller, directory in handle.cgroup.dirs.items():
        assert directory.name == f"lxc.payload.{spec.name}", (controller, directory)
        for child in children:
            assert str(child.pid) in (directory / "cgroup.procs").read_text().split()
    assert contract.limit_file(handle.cgroup, "pids", "pids.max", "pids.max") == "64"
    (wrapper,) = children
    contract.check_hardening(handle, spec, pid=wrapper.pid)
    # lxc-init keeps its own capabilities but has an empty bounding set: nothing it
    # starts (the wrapper, the workload) can have any.
    init_status = Path(f"/proc/{handle.pid}/status").read_text()
    assert re.search(r"^CapBnd:\s+0+$", init_status, re.M), init_status
    # The footprint is the lxc-execute monitor, which is not inside the container.
    (monitor,) = lxc_runtime.footprint_pids()
    assert psutil.Process(monitor).name() == "lxc-execute"
    assert f"lxc container {spec.name}" in lxc_runtime.leftovers()


@pytest.mark.parametrize(("argv", "expected"), contract.EXIT_CASES)
def test_exit_codes_pass_through(
    lxc_runtime: LxcRuntime,
    io_dir: Path,
    started: list[ContainerHandle],
    argv: list[str],
    expected: int,
) -> None:
    contract.check_exit_code(lxc_runtime, io_dir, started, argv, expected)


def test_network_is_off_and_workdir_is_the_io_dir(
    lxc_runtime: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    contract.check_network_off_and_workdir(lxc_runtime, io_dir, started)


def test_wait_notices_a_container_killed_from_outside(
    lxc_runtime: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    exit_code = contract.check_wait_notices_outside_kill(lxc_runtime, io_dir, started)
    # lxc-execute reports its own failure status, not a signal number, after lxc-stop -k.
    assert exit_code != 0


def test_failed_start_leaves_nothing(lxc_runtime: LxcRuntime, io_dir: Path) -> None:
    # A cpuset no CPU has: LXC cannot write the cgroup, so the container never runs.
    spec = contract.make_spec(io_dir, ["/bin/busybox", "true"], limits=Limits(cpuset="4095"))
    with pytest.raises(BenchError, match=spec.name):
        lxc_runtime.start(spec)
    assert not any(spec.name in item for item in lxc_runtime.leftovers())
    assert not (io_dir / "ctl").exists()
    assert (io_dir / LOG_FILE).read_text()  # lxc-execute said why


def test_stale_entries_are_leftovers_and_removed(tmp_path: Path) -> None:
    runtime = LxcRuntime(lxcpath=tmp_path / "bench-lxc")
    runtime.lxcpath.mkdir()
    (runtime.lxcpath / "bench-crashed.conf").write_text("lxc.uts.name = bench-crashed\n")
    (runtime.lxcpath / "bench-crashed").mkdir()
    (runtime.lxcpath / "not-bench").mkdir()
    assert runtime.leftovers() == [
        f"lxc entry {runtime.lxcpath / 'bench-crashed'}",
        f"lxc entry {runtime.lxcpath / 'bench-crashed.conf'}",
    ]
    assert runtime.remove_leftovers() == 2
    assert runtime.leftovers() == []
    assert sorted(p.name for p in runtime.lxcpath.iterdir()) == ["not-bench"]


def test_version_and_missing_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runtime = LxcRuntime(lxcpath=tmp_path / "bench-lxc")
    assert runtime.version().startswith("lxc ")
    assert runtime.version()[4:5].isdigit()
    monkeypatch.setenv("PATH", str(tmp_path))  # no lxc-* tools on this PATH
    availability = runtime.available()
    assert not availability.ok
    assert "lxc-execute" in availability.reason
    assert availability.fix == "apt-get install lxc"
