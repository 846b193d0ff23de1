"""PodmanRuntime against a real podman service: limits hold, counters survive, nothing is left."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from bench.cgroups import open_reader
from bench.cgroups.model import CgroupLocation, CgroupSnapshot
from bench.errors import BenchError
from bench.image import STRESS_NG
from bench.runtimes._container import ContainerHandle
from bench.runtimes.podman import PRIVATE_SOCKET_DIR, PodmanRuntime, default_oci_runtime
from bench.spec import CPU_PERIOD_US, Limits, StartSpec
from tests.conftest import require, require_root

if TYPE_CHECKING:
    from bench.image import WorkloadImage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1 << 20


@pytest.fixture(scope="module")
def podman_runtime(workload_image: WorkloadImage) -> Iterator[PodmanRuntime]:
    """PodmanRuntime with the image imported; teardown removes and asserts no leftovers."""
    require_root()
    require(shutil.which("podman") is not None, "podman is not installed (apt-get install podman)")
    runtime = PodmanRuntime()
    availability = runtime.available()
    require(availability.ok, availability.reason)
    runtime.prepare(workload_image)
    service_pids = runtime.service_pids()
    yield runtime
    runtime.close()
    runtime.remove_leftovers()
    left = runtime.leftovers()
    assert left == [], f"podman objects left behind by the tests: {left}"
    assert not any(Path(f"/proc/{pid}").exists() for pid in service_pids), "service still runs"


@pytest.fixture
def io_dir(tmp_path: Path) -> Path:
    path = tmp_path / "io"
    path.mkdir()
    return path


@pytest.fixture
def started() -> Iterator[list[ContainerHandle]]:
    """Handles a test started; each is stopped even when the test fails."""
    handles: list[ContainerHandle] = []
    yield handles
    for handle in handles:
        handle.stop()


def _spec(io_dir: Path, argv: list[str], **kwargs: object) -> StartSpec:
    name = f"bench-test-{uuid.uuid4().hex[:10]}"
    return StartSpec(name=name, argv=tuple(argv), io_dir=io_dir, **kwargs)  # type: ignore[arg-type]


def _snapshot(location: CgroupLocation) -> CgroupSnapshot:
    reader = open_reader(location)
    try:
        return reader.read()
    finally:
        reader.close()


def _limit_file(location: CgroupLocation, controller: str, v1_name: str, v2_name: str) -> str:
    directory = location.dir_for(controller)
    assert directory is not None
    return (directory / (v1_name if location.version == "v1" else v2_name)).read_text().strip()


def test_cpu_workload_runs_and_writes_metrics(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = [str(STRESS_NG), "--cpu", "1", "--timeout", "2s", "--metrics", "--yaml", "metrics.yaml"]
    handle = podman_runtime.start(_spec(io_dir, argv, limits=Limits(cpus=1.0)))
    started.append(handle)
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None and exit_info.exit_code == 0, (io_dir / "stderr.txt").read_text()
    # The wrapper keeps the container and its cgroup alive: final counters are readable.
    cpu_s = _snapshot(handle.cgroup).cpu_usage_ns / 1e9
    metrics = yaml.safe_load((io_dir / "metrics.yaml").read_text())
    (cpu,) = [m for m in metrics["metrics"] if m["stressor"] == "cpu"]
    bogo_ops_per_s = float(cpu["bogo-ops-per-second-real-time"])
    stop_s = handle.stop()
    print(
        f"\npodman cpu: {bogo_ops_per_s:.1f} bogo-ops/s, cgroup cpu {cpu_s:.2f} s, "
        f"start {handle.start_latency_s * 1000:.0f} ms, stop {stop_s * 1000:.0f} ms"
    )
    assert bogo_ops_per_s > 0
    own_cpu_s = float(cpu["user-time"]) + float(cpu["system-time"])
    assert cpu_s == pytest.approx(own_cpu_s, rel=0.1, abs=0.1)
    assert cpu_s < 2.5  # one worker for 2 s
    assert 0 < handle.start_latency_s < 30
    assert 0 < stop_s < 5  # SIGKILL at once, not podman's 10 s SIGTERM grace
    assert handle.stop() == 0.0
    assert not any(directory.exists() for directory in handle.cgroup.dirs.values())
    assert not (io_dir / "ctl").exists()


def test_cpu_quota_half_a_cpu(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = [str(STRESS_NG), "--cpu", "1", "--timeout", "4s"]
    handle = podman_runtime.start(_spec(io_dir, argv, limits=Limits(cpus=0.5)))
    started.append(handle)
    if handle.cgroup.version == "v1":
        quota = _limit_file(handle.cgroup, "cpu", "cpu.cfs_quota_us", "")
        period = _limit_file(handle.cgroup, "cpu", "cpu.cfs_period_us", "")
    else:
        quota, period = _limit_file(handle.cgroup, "cpu", "", "cpu.max").split()
    assert (int(quota), int(period)) == (50_000, CPU_PERIOD_US)
    time.sleep(0.3)  # past stress-ng's start-up: measure the steady state
    usage0, t0 = _snapshot(handle.cgroup).cpu_usage_ns, time.monotonic()
    time.sleep(3.0)
    usage1, t1 = _snapshot(handle.cgroup).cpu_usage_ns, time.monotonic()
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None and exit_info.exit_code == 0
    rate = (usage1 - usage0) / 1e9 / (t1 - t0)
    print(f"\npodman cpus=0.5: CPU rate {rate:.3f}")
    assert rate == pytest.approx(0.5, abs=0.05)


def test_memory_limit_oom_kills_are_counted(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = [
        str(STRESS_NG), "--vm", "1", "--vm-bytes", "400m", "--oomable", "--timeout", "10s",
    ]  # fmt: skip
    handle = podman_runtime.start(_spec(io_dir, argv, limits=Limits(memory_bytes=256 * MIB)))
    started.append(handle)
    limit = _limit_file(handle.cgroup, "memory", "memory.limit_in_bytes", "memory.max")
    assert int(limit) == 256 * MIB
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None, "stress-ng did not finish"
    snapshot = _snapshot(handle.cgroup)
    print(
        f"\npodman 256 MiB vs 400 MiB: {snapshot.oom_kill_count} oom kills, "
        f"peak {snapshot.mem_peak_bytes}, exit {exit_info.exit_code}"
    )
    assert snapshot.oom_kill_count > 0
    assert snapshot.mem_peak_bytes is None or snapshot.mem_peak_bytes <= 256 * MIB


def test_cgroup_is_the_one_podman_reports(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    spec = _spec(io_dir, ["/bin/busybox", "sleep", "30"], limits=Limits(pids=64))
    handle = podman_runtime.start(spec)
    started.append(handle)
    proc = subprocess.run(
        ["podman", "inspect", spec.name], capture_output=True, text=True, check=True
    )
    (inspect,) = yaml.safe_load(proc.stdout)  # JSON is YAML
    assert inspect["State"]["Pid"] == handle.pid
    assert inspect["Config"]["Labels"].get("bench") == "1"
    assert inspect["OCIRuntime"] == default_oci_runtime()
    for controller, directory in handle.cgroup.dirs.items():
        assert inspect["Id"] in str(directory), (controller, directory)
        assert str(handle.pid) in (directory / "cgroup.procs").read_text().split()
    assert _limit_file(handle.cgroup, "pids", "pids.max", "pids.max") == "64"
    status = Path(f"/proc/{handle.pid}/status").read_text()
    assert re.search(r"^CapEff:\s+0+$", status, re.M), "capabilities were not all dropped"
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    # Rlimits are the caller's, not podman's defaults (which fail here).
    limits = Path(f"/proc/{handle.pid}/limits").read_text()
    for name, soft, hard in spec.rlimits:
        label = {"nofile": "Max open files", "nproc": "Max processes"}[name]
        assert re.search(rf"^{label}\s+{soft}\s+{hard}\s", limits, re.M), (name, limits)
    # The monitor (conmon) of this container counts in the footprint, apart from the service.
    assert inspect["State"]["ConmonPid"] in podman_runtime.monitor_pids()
    assert set(podman_runtime.service_pids()) <= set(podman_runtime.footprint_pids())


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/bin/busybox", "sh", "-c", "exit 3"], 3),
        (["/usr/bin/bench-not-in-image"], 127),
        (["/bin/busybox", "sh", "-c", "kill -9 $$"], 137),
        (["/bin/busybox", "touch", "/read-only-rootfs"], 1),
    ],
)
def test_exit_codes_pass_through(
    podman_runtime: PodmanRuntime,
    io_dir: Path,
    started: list[ContainerHandle],
    argv: list[str],
    expected: int,
) -> None:
    handle = podman_runtime.start(_spec(io_dir, argv))
    started.append(handle)
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == expected


def test_network_is_off_and_workdir_is_the_io_dir(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = ["/bin/busybox", "sh", "-c", 'ls /sys/class/net; pwd; echo "$0" > out.txt', "hello"]
    handle = podman_runtime.start(_spec(io_dir, argv))
    started.append(handle)
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == 0
    assert (io_dir / "stdout.txt").read_text().split() == ["lo", "/bench"]
    assert (io_dir / "out.txt").read_text() == "hello\n"


def test_wait_notices_a_container_killed_from_outside(
    podman_runtime: PodmanRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    handle = podman_runtime.start(_spec(io_dir, ["/bin/busybox", "sleep", "30"]))
    started.append(handle)
    handle.kill()  # the wrapper dies too, so no "E" line ever comes
    exit_info = handle.wait(timeout_s=15)
    assert exit_info is not None and exit_info.exit_code == 137


def test_failed_start_leaves_no_container(podman_runtime: PodmanRuntime, io_dir: Path) -> None:
    # The workload's own rlimit above what podman itself may grant: runc refuses to start.
    spec = _spec(io_dir, ["/bin/busybox", "true"], rlimits=(("nproc", 1 << 30, 1 << 30),))
    with pytest.raises(BenchError, match=spec.name):
        podman_runtime.start(spec)
    assert not any(spec.name in item for item in podman_runtime.leftovers())
    assert not (io_dir / "ctl").exists()


def test_version_names_podman_and_oci_runtime(podman_runtime: PodmanRuntime) -> None:
    version = podman_runtime.version()
    assert re.match(r"podman \d+\.\d+", version), version
    assert default_oci_runtime() in version


def test_service_down_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    socket = tmp_path / "no-podman.sock"
    runtime = PodmanRuntime(base_url=f"unix://{socket}")
    availability = runtime.available()
    runtime.close()
    assert not availability.ok
    assert str(socket) in availability.reason
    assert "podman system service" in availability.fix


def test_private_service_stops_on_close() -> None:
    require_root()
    runtime = PodmanRuntime()
    try:
        assert runtime.available().ok
        pids = runtime.service_pids()
        sockets = sorted(PRIVATE_SOCKET_DIR.glob(f"bench-podman-{os.getpid()}-*"))
    finally:
        runtime.close()
    if not sockets:
        pytest.skip("the shared /run/podman/podman.sock served: no private service to stop")
    assert pids
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any(path.exists() for path in sockets)


def test_stale_private_service_is_a_leftover_and_removed() -> None:
    """A service whose owning bench process died (crash, kill -9) is found and stopped."""
    require_root()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names a process that no longer exists
    socket = PRIVATE_SOCKET_DIR / f"bench-podman-{dead.pid}-runc.sock"
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
