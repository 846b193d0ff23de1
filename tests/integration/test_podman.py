"""PodmanRuntime against a real podman service: its own view, private services, OCI runtimes.

The checks every container runtime passes are in test_container_contract.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bench.cgroups import host_cgroup_version
from bench.errors import BenchError
from bench.runtimes._container import ContainerHandle
from bench.runtimes.podman import PRIVATE_SOCKET_DIR, PodmanRuntime, default_oci_runtime
from tests.helpers import (
    availability_without_daemon,
    check_engine_view,
    check_failed_start,
    make_spec,
    require,
    require_root,
    start,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cgroup_is_the_one_podman_reports(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    _, inspect = check_engine_view(podman_runtime, started, io_dir)
    assert inspect["OCIRuntime"] == default_oci_runtime()
    # The container's monitor (conmon) counts in the footprint, apart from the service.
    assert inspect["State"]["ConmonPid"] in podman_runtime.monitor_pids()
    assert set(podman_runtime.service_pids()) <= set(podman_runtime.footprint_pids())


def test_failed_start_leaves_no_container(podman_runtime: PodmanRuntime, io_dir: Path) -> None:
    # The workload's own rlimit above what podman itself may grant: runc refuses to start.
    rlimits = (("nproc", 1 << 30, 1 << 30),)
    check_failed_start(podman_runtime, make_spec(io_dir, ["/bin/busybox", "true"], rlimits=rlimits))


def test_oci_runtime_per_container_gets_its_own_service(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """crun on a hybrid host fails cleanly (docs/host-notes.md); elsewhere it runs under crun."""
    require(shutil.which("crun") is not None, "crun is not installed")
    spec = make_spec(io_dir, ["/bin/busybox", "true"], oci_runtime="crun")
    if host_cgroup_version() == "hybrid":
        with pytest.raises(BenchError, match="crun"):
            podman_runtime.start(spec)
        assert not any(spec.name in item for item in podman_runtime.leftovers())
    else:
        handle = start(podman_runtime, started, spec)
        exit_info = handle.wait(timeout_s=30)
        assert exit_info is not None and exit_info.exit_code == 0
    # A second service (podman --runtime crun) serves it; the default one still runs.
    assert len(podman_runtime.service_pids()) == 2


def test_version_names_podman_and_oci_runtime(podman_runtime: PodmanRuntime) -> None:
    version = podman_runtime.version()
    assert re.match(r"podman \d+\.\d+", version), version
    assert default_oci_runtime() in version


def test_service_down_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    socket, availability = availability_without_daemon(PodmanRuntime, tmp_path)
    assert not availability.ok
    assert socket in availability.reason
    assert "podman system service" in availability.fix


def test_private_service_stops_on_close() -> None:
    require_root()
    # The module's runtime has services of its own in this process: look only at new ones.
    pattern = f"bench-podman-{os.getpid()}-*.sock"
    before = set(PRIVATE_SOCKET_DIR.glob(pattern))
    runtime = PodmanRuntime()
    try:
        assert runtime.available().ok
        pids = runtime.service_pids()
        sockets = sorted(set(PRIVATE_SOCKET_DIR.glob(pattern)) - before)
    finally:
        runtime.close()
    if not sockets:
        pytest.skip("the shared /run/podman/podman.sock served: no private service to stop")
    assert pids
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert len(sockets) == 1 and not sockets[0].exists()


def test_stale_private_service_is_a_leftover_and_removed() -> None:
    """A service whose owning bench process died (crash, kill -9) is found and stopped."""
    require_root()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names a process that no longer exists
    socket = PRIVATE_SOCKET_DIR / f"bench-podman-{dead.pid}-runc-0123abcd.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runtime = PodmanRuntime()
    try:
        deadline = time.monotonic() + 20
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = runtime.leftovers()
        assert f"podman service pid {service.pid}" in left
        assert f"podman service socket {socket}" in left
        assert runtime.remove_leftovers() >= 2
        service.wait(timeout=15)
        assert not socket.exists()
        assert not any(
            str(socket) in item or str(service.pid) in item for item in runtime.leftovers()
        )
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        socket.unlink(missing_ok=True)
        runtime.close()
