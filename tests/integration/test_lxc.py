"""LxcRuntime with the real lxc-* tools: what lxc and lxc-system both do (`lxc_flavour`), then
lxc's own view, monitor, lxcpath entries and tools.

The checks every container runtime passes are in test_container_contract.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest

from bench.runtimes._container import ContainerHandle
from bench.runtimes.lxc import LOG_FILE, LxcRuntime
from bench.runtimes.lxc_system import BOOT_FIFO, LxcSystemRuntime
from bench.spec import Limits
from tests.helpers import (
    check_failed_start,
    check_hardening,
    check_run_and_stop,
    limit_file,
    lxc_info_pid,
    make_spec,
    start_sleeper,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# The log of the tool that launches each flavour, in the trial's io dir.
LAUNCH_LOG = {"lxc": LOG_FILE, "lxc-system": "lxc-start.log"}


def test_stopped_container_leaves_no_monitor(
    lxc_flavour: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    # Stopped: its config and directory in the lxcpath are gone, its monitor (and lxc-attach)
    # too. A system container booted its init within the start.
    boots = isinstance(lxc_flavour, LxcSystemRuntime)
    check_run_and_stop(lxc_flavour, io_dir, started, boots=boots)


def test_failed_start_leaves_nothing(lxc_flavour: LxcRuntime, io_dir: Path) -> None:
    # A cpuset no CPU has: LXC cannot write the cgroup, so the container never runs.
    spec = make_spec(io_dir, ["/bin/busybox", "true"], limits=Limits(cpuset="4095"))
    check_failed_start(lxc_flavour, spec)
    assert not (io_dir / BOOT_FIFO).exists()
    assert (io_dir / LAUNCH_LOG[lxc_flavour.name]).read_text()  # lxc-execute or lxc-start said why
    assert lxc_flavour.footprint_pids() == []


def test_cgroup_is_the_one_lxc_reports(
    lxc_runtime: LxcRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    spec, handle = start_sleeper(lxc_runtime, started, io_dir, limits=Limits(pids=64))
    assert lxc_info_pid(lxc_runtime.lxcpath, spec.name) == handle.pid
    # lxc-execute runs lxc-init as the container's PID 1 and the wrapper as its child.
    children = psutil.Process(handle.pid).children()
    assert [child.cmdline()[:3] for child in children] == [["/bin/busybox", "sh", "-c"]]
    for controller, directory in handle.cgroup.dirs.items():
        assert directory.name == f"lxc.payload.{spec.name}", (controller, directory)
        for child in children:
            assert str(child.pid) in (directory / "cgroup.procs").read_text().split()
    assert limit_file(handle.cgroup, "pids", "pids.max", "pids.max") == "64"
    (wrapper,) = children
    check_hardening(handle, spec, pid=wrapper.pid)
    # lxc-init keeps its own capabilities but has an empty bounding set: nothing it
    # starts (the wrapper, the workload) can have any.
    init_status = Path(f"/proc/{handle.pid}/status").read_text()
    assert re.search(r"^CapBnd:\s+0+$", init_status, re.M), init_status
    # The footprint is the lxc-execute monitor, which is not inside the container.
    (monitor,) = lxc_runtime.footprint_pids()
    assert psutil.Process(monitor).name() == "lxc-execute"
    assert f"lxc container {spec.name}" in lxc_runtime.leftovers()


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
