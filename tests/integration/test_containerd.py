"""ContainerdRuntime with the real ctr and containerd: its own view of the cgroup, hardening.

The checks every container runtime passes are in test_container_contract.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.cgroups.locate import cgroup_mounts
from bench.runtimes import _containerd_service as service
from bench.runtimes._container import ContainerHandle
from bench.runtimes.containerd import ContainerdRuntime
from bench.spec import Limits
from tests.helpers import limit_file, start_sleeper

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cgroup_is_the_one_in_the_containers_spec(
    containerd_runtime: ContainerdRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    spec, handle = start_sleeper(
        containerd_runtime, started, io_dir, limits=Limits(pids=64, cpuset="0")
    )
    daemon = containerd_runtime._connect()
    info = json.loads(
        service.ctr_checked(
            daemon.address, containerd_runtime._namespace, "containers", "info", spec.name
        )
    )
    tasks = service.ctr_checked(daemon.address, containerd_runtime._namespace, "tasks", "ls")
    assert re.search(rf"^{spec.name}\s+{handle.pid}\s+RUNNING$", tasks, re.M), tasks
    cgroups_path = info["Spec"]["linux"]["cgroupsPath"]
    mounts = cgroup_mounts()
    for controller, directory in handle.cgroup.dirs.items():
        assert directory == mounts[controller] / cgroups_path.lstrip("/"), controller
    # The limits ctr has no flag for arrive through bench's cgroup.
    assert limit_file(handle.cgroup, "pids", "pids.max", "pids.max") == "64"
    assert limit_file(handle.cgroup, "cpuset", "cpuset.cpus", "cpuset.cpus") == "0"
    status = Path(f"/proc/{handle.pid}/status").read_text()
    assert re.search(r"^CapEff:\s+0+$", status, re.M), "capabilities were not all dropped"
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert handle.pid not in containerd_runtime.footprint_pids()
    assert len(containerd_runtime.footprint_pids()) >= 2  # the daemon (or the host's) and a shim
