"""LxdRuntime against the host's LXD daemon: its view of the container, boot time, cleanup.

The checks every container runtime passes are in test_container_contract.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psutil
import pytest

from bench.cgroups.locate import locate
from bench.errors import BenchError
from bench.runtimes._container import ContainerHandle
from bench.runtimes.lxc_system import BOOT_FIFO
from bench.runtimes.lxd import LxdRuntime, client, daemon_pid, query
from bench.servers import NOBODY
from bench.spec import Limits
from tests.helpers import check_hardening, check_run_and_stop, limit_file, make_spec, sleeper_as

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cgroup_and_init_are_the_ones_lxd_reports_with_the_workload_exec_d(
    lxd_runtime: LxdRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    spec, handle = sleeper_as(lxd_runtime, started, io_dir, NOBODY, limits=Limits(pids=64))
    state = query(f"/1.0/instances/{spec.name}/state")
    assert state["pid"] == handle.pid
    init = psutil.Process(handle.pid)
    assert init.cmdline() == ["/bin/busybox", "init"]
    assert init.uids().real == 0  # the init stays root; the workload runs as the user
    print(f"\nlxd init cgroup {handle.cgroup.display}, boot {handle.boot_s:.3f} s")
    for controller, directory in handle.cgroup.dirs.items():
        assert directory.name == f"lxc.payload.{spec.name}", (controller, directory)
    # LXD counts the container's processes from the same cgroup: init, wrapper, sleep.
    pids_dir = handle.cgroup.dir_for("pids")
    assert pids_dir is not None
    assert state["processes"] == int((pids_dir / "pids.current").read_text()) == 3
    assert limit_file(handle.cgroup, "pids", "pids.max", "pids.max") == "64"
    (wrapper,) = [
        p
        for p in psutil.process_iter(["cmdline"])
        if (p.info["cmdline"] or [])[:3] == ["/bin/busybox", "sh", "-c"]
        and str(p.pid) in (pids_dir / "cgroup.procs").read_text().split()
    ]
    assert (wrapper.uids().real, wrapper.gids().real) == NOBODY
    # `lxc exec` put it in the container's cgroup (on v2 liblxc attaches into a leaf below).
    attached = locate(wrapper.pid)
    for controller, directory in handle.cgroup.dirs.items():
        below = attached.dirs[controller]
        assert below == directory or below.parent == directory, (controller, below)
    check_hardening(dataclasses.replace(handle, cgroup=attached), spec, pid=wrapper.pid)
    # LXD's own processes (daemon, monitor, `lxc exec`) are outside the container's cgroup.
    own = lxd_runtime.footprint_pids()
    assert daemon_pid() in own and len(own) >= 3, own
    inside = {int(pid) for pid in (pids_dir / "cgroup.procs").read_text().split()}
    assert not inside & set(own)
    assert f"lxd container {spec.name}" in lxd_runtime.leftovers()


def test_boot_time_is_measured_within_the_start_and_stop_deletes_the_container(
    lxd_runtime: LxdRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    # leftovers() lists the daemon's instances: stop deleted the container.
    check_run_and_stop(lxd_runtime, io_dir, started, boots=True)


def test_failed_start_leaves_nothing(lxd_runtime: LxdRuntime, io_dir: Path) -> None:
    # A cpuset no CPU has: liblxc cannot write the cgroup, so the init never runs.
    spec = make_spec(io_dir, ["/bin/busybox", "true"], limits=Limits(cpuset="4095"))
    with pytest.raises(BenchError, match=spec.name):
        lxd_runtime.start(spec)
    assert client("info", spec.name).returncode != 0, "the failed container was not deleted"
    assert not (io_dir / "ctl").exists() and not (io_dir / BOOT_FIFO).exists()
    assert lxd_runtime.footprint_pids() == []
