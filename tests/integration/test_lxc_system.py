"""LxcSystemRuntime with the real lxc-* tools: the booted init and lxc-attach.

The checks every container runtime passes are in test_container_contract.py; what lxc and
lxc-system both do (boot time, cleanup, a failed start) in test_lxc.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psutil
import pytest

from bench.cgroups.locate import locate
from bench.cgroups.model import CgroupLocation
from bench.errors import BenchError
from bench.runtimes._container import ContainerHandle
from bench.runtimes.lxc_system import LxcSystemRuntime
from bench.servers import NOBODY
from bench.spec import Limits
from tests.helpers import check_hardening, limit_file, lxc_info_pid, make_spec, sleeper_as

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cgroup_is_the_one_lxc_reports_with_the_workload_attached(
    lxc_system_runtime: LxcSystemRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    spec, handle = sleeper_as(lxc_system_runtime, started, io_dir, NOBODY, limits=Limits(pids=64))
    assert lxc_info_pid(lxc_system_runtime.lxcpath, spec.name) == handle.pid
    init = psutil.Process(handle.pid)
    assert init.cmdline() == ["/bin/busybox", "init"]
    assert init.uids().real == 0  # the init stays root; the workload runs as the user
    # The wrapper is not the init's child: lxc-attach on the host started it.
    attach_pids = set(lxc_system_runtime.footprint_pids())
    # By argv: lxc-attach re-executes itself from a memfd, so its name is "memfd:lxc-attac".
    names = sorted(Path(psutil.Process(pid).cmdline()[0]).name for pid in attach_pids)
    assert names == ["lxc-attach", "lxc-start"]
    (wrapper,) = [
        child
        for pid in attach_pids
        for child in psutil.Process(pid).children()
        if child.cmdline()[:3] == ["/bin/busybox", "sh", "-c"]
    ]
    assert (wrapper.uids().real, wrapper.gids().real) == NOBODY
    # The wrapper is in the init's cgroup (v1) or in a leaf below it (v2: LXC attaches into
    # one there, as a cgroup2 process may not sit beside children with controllers); the
    # init's cgroup counts it either way, every v2 reading being hierarchical.
    attached = locate(wrapper.pid)
    print(f"\nlxc-system init cgroup {handle.cgroup.display}, attached {attached.display}")
    for controller, directory in handle.cgroup.dirs.items():
        assert directory.name == f"lxc.payload.{spec.name}", (controller, directory)
        assert str(handle.pid) in (directory / "cgroup.procs").read_text().split()
        below = attached.dirs[controller]
        assert below == directory or below.parent == directory, (controller, below)
        assert str(wrapper.pid) in (below / "cgroup.procs").read_text().split()
    assert limit_file(handle.cgroup, "pids", "pids.max", "pids.max") == "64"
    check_hardening(attached_handle(handle, attached), spec, pid=wrapper.pid)
    assert f"lxc container {spec.name}" in lxc_system_runtime.leftovers()


def attached_handle(handle: ContainerHandle, attached: CgroupLocation) -> ContainerHandle:
    """The handle with the attached wrapper's cgroup, for check_hardening's cgroup check."""
    return dataclasses.replace(handle, cgroup=attached)


def test_bridge_mode_is_refused(lxc_system_runtime: LxcSystemRuntime, io_dir: Path) -> None:
    spec = make_spec(io_dir, ["/bin/busybox", "true"], network="bridge")
    with pytest.raises(BenchError, match="bridge"):
        lxc_system_runtime.start(spec)
