"""DockerRuntime against a real dockerd: limits hold, counters survive, nothing is left."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from bench.cgroups import CgroupLocation, CgroupSnapshot, open_reader
from bench.errors import BenchError
from bench.image import STRESS_NG
from bench.runtimes._container import ContainerHandle
from bench.runtimes.docker import DockerRuntime
from bench.spec import CPU_PERIOD_US, Limits, StartSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1 << 20


@pytest.fixture
def io_dir(tmp_path: Path) -> Path:
    path = tmp_path / "io"
    path.mkdir()
    return path


@pytest.fixture
def started(docker_runtime: DockerRuntime) -> Iterator[list[ContainerHandle]]:
    """Handles a test started; each is stopped even when the test fails."""
    handles: list[ContainerHandle] = []
    yield handles
    for handle in handles:
        handle.stop()


def _spec(
    io_dir: Path, argv: list[str], limits: Limits | None = None, oci_runtime: str | None = None
) -> StartSpec:
    name = f"bench-test-{uuid.uuid4().hex[:10]}"
    return StartSpec(
        name=name,
        argv=tuple(argv),
        io_dir=io_dir,
        limits=limits or Limits(),
        oci_runtime=oci_runtime,
    )


def _snapshot(location: CgroupLocation) -> CgroupSnapshot:
    reader = open_reader(location)
    try:
        return reader.read()
    finally:
        reader.close()


def _cpu_max(location: CgroupLocation) -> tuple[int, int]:
    """(quota, period) in microseconds."""
    if location.version == "v1":
        directory = location.dir_for("cpu")
        assert directory is not None
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        return quota, int((directory / "cpu.cfs_period_us").read_text())
    quota_text, period_text = (location.dirs["unified"] / "cpu.max").read_text().split()
    return int(quota_text), int(period_text)


def _memory_limit_bytes(location: CgroupLocation) -> int:
    if location.version == "v1":
        directory = location.dir_for("memory")
        assert directory is not None
        return int((directory / "memory.limit_in_bytes").read_text())
    return int((location.dirs["unified"] / "memory.max").read_text())


def _swap_limit_bytes(location: CgroupLocation) -> int | None:
    """Swap allowed beyond the memory limit; None when the kernel does not account swap."""
    if location.version == "v1":
        directory = location.dir_for("memory")
        assert directory is not None
        memsw = directory / "memory.memsw.limit_in_bytes"
        if not memsw.exists():
            return None
        return int(memsw.read_text()) - _memory_limit_bytes(location)
    swap_max = location.dirs["unified"] / "memory.swap.max"
    return int(swap_max.read_text()) if swap_max.exists() else None


def test_cpu_workload_runs_with_throughput(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = [str(STRESS_NG), "--cpu", "1", "--timeout", "2s", "--metrics", "--yaml", "metrics.yaml"]
    handle = docker_runtime.start(_spec(io_dir, argv, limits=Limits(cpus=1.0)))
    started.append(handle)
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None and exit_info.exit_code == 0, (io_dir / "stderr.txt").read_text()
    # The container (and its cgroup) outlives the workload: final counters are readable.
    cpu_s = _snapshot(handle.cgroup).cpu_usage_ns / 1e9
    metrics = yaml.safe_load((io_dir / "metrics.yaml").read_text())
    (cpu,) = [m for m in metrics["metrics"] if m["stressor"] == "cpu"]
    bogo_ops_per_s = float(cpu["bogo-ops-per-second-real-time"])
    stop_s = handle.stop()
    print(
        f"\ndocker cpu: {bogo_ops_per_s:.1f} bogo-ops/s, cgroup cpu {cpu_s:.2f} s, "
        f"start {handle.start_latency_s * 1000:.0f} ms, stop {stop_s * 1000:.0f} ms"
    )
    assert bogo_ops_per_s > 0
    # The cgroup's CPU time agrees with stress-ng's own getrusage (other load on the host
    # may slow the worker, but both see the same seconds).
    own_cpu_s = float(cpu["user-time"]) + float(cpu["system-time"])
    assert cpu_s == pytest.approx(own_cpu_s, rel=0.1, abs=0.1)
    assert cpu_s < 2.5  # one worker for 2 s
    assert 0 < handle.start_latency_s < 30
    assert 0 < stop_s < 30
    assert handle.stop() == 0.0  # idempotent
    assert not any(directory.exists() for directory in handle.cgroup.dirs.values())
    assert not (io_dir / "ctl").exists()


def test_cpu_quota_half_a_cpu(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = [str(STRESS_NG), "--cpu", "1", "--timeout", "6s"]
    handle = docker_runtime.start(_spec(io_dir, argv, limits=Limits(cpus=0.5)))
    started.append(handle)
    assert _cpu_max(handle.cgroup) == (50_000, CPU_PERIOD_US)
    reader = open_reader(handle.cgroup)
    time.sleep(0.3)  # past stress-ng's start-up: measure the steady state
    points = [(reader.read().cpu_usage_ns, time.monotonic())]
    for _ in range(4):
        time.sleep(1.0)
        points.append((reader.read().cpu_usage_ns, time.monotonic()))
    reader.close()
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None and exit_info.exit_code == 0
    rates = [(u1 - u0) / 1e9 / (t1 - t0) for (u0, t0), (u1, t1) in pairwise(points)]
    overall = (points[-1][0] - points[0][0]) / 1e9 / (points[-1][1] - points[0][1])
    print(f"\ndocker cpus=0.5: CPU rate {overall:.3f} (1 s windows: {rates})")
    # The cap holds in every window. Other load on a 2-core host can only take CPU away,
    # so the best window shows what the quota grants.
    assert max(rates) <= 0.55
    assert max(rates) == pytest.approx(0.5, abs=0.05), f"load average {os.getloadavg()}"


def test_memory_limit_oom_kills_are_counted(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = [
        str(STRESS_NG), "--vm", "1", "--vm-bytes", "400m", "--oomable", "--timeout", "10s",
    ]  # fmt: skip
    handle = docker_runtime.start(_spec(io_dir, argv, limits=Limits(memory_bytes=256 * MIB)))
    started.append(handle)
    assert _memory_limit_bytes(handle.cgroup) == 256 * MIB
    assert _swap_limit_bytes(handle.cgroup) in (0, None)  # no swap beyond the limit
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None, "stress-ng did not finish"
    final = _snapshot(handle.cgroup)
    kills = final.oom_kill_count
    print(f"\ndocker 256 MiB vs 400 MiB: {kills} oom kills, exit {exit_info.exit_code}")
    assert kills > 0
    # The limit held: usage never went past it (v2 before 5.19 has no peak file).
    assert final.mem_peak_bytes is None or final.mem_peak_bytes <= 256 * MIB


def test_cgroup_is_the_one_docker_reports(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    import docker

    spec = _spec(io_dir, ["/bin/busybox", "sleep", "30"])
    handle = docker_runtime.start(spec)
    started.append(handle)
    client = docker.from_env()
    try:
        container = client.containers.get(spec.name)
        assert container.attrs["State"]["Pid"] == handle.pid
        assert container.labels.get("bench") == "1"
        proc_cgroup = Path(f"/proc/{handle.pid}/cgroup").read_text()
        for controller, directory in handle.cgroup.dirs.items():
            assert container.id in str(directory), (controller, directory)
            assert directory.is_dir()
            tasks = directory / "cgroup.procs"
            assert str(handle.pid) in tasks.read_text().split()
        assert container.id in proc_cgroup
        status = Path(f"/proc/{handle.pid}/status").read_text()
        assert re.search(r"^CapEff:\s+0+$", status, re.M), "capabilities were not all dropped"
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    finally:
        client.close()


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
    docker_runtime: DockerRuntime,
    io_dir: Path,
    started: list[ContainerHandle],
    argv: list[str],
    expected: int,
) -> None:
    handle = docker_runtime.start(_spec(io_dir, argv, oci_runtime="runc"))
    started.append(handle)
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == expected


def test_network_is_off_and_workdir_is_the_io_dir(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    argv = ["/bin/busybox", "sh", "-c", 'ls /sys/class/net; pwd; echo "$0" > out.txt', "hello"]
    handle = docker_runtime.start(_spec(io_dir, argv))
    started.append(handle)
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == 0
    assert (io_dir / "stdout.txt").read_text().split() == ["lo", "/bench"]
    assert (io_dir / "out.txt").read_text() == "hello\n"


def test_wait_times_out_while_the_workload_runs(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    handle = docker_runtime.start(_spec(io_dir, ["/bin/busybox", "sleep", "30"]))
    started.append(handle)
    began = time.monotonic()
    assert handle.wait(timeout_s=1.5) is None
    assert 1.4 < time.monotonic() - began < 5


def test_wait_notices_a_container_killed_from_outside(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    handle = docker_runtime.start(_spec(io_dir, ["/bin/busybox", "sleep", "30"]))
    started.append(handle)
    handle.kill()  # the wrapper dies too, so no "E" line ever comes
    exit_info = handle.wait(timeout_s=15)
    assert exit_info is not None and exit_info.exit_code == 137


def test_failed_start_leaves_no_container(docker_runtime: DockerRuntime, io_dir: Path) -> None:
    spec = _spec(io_dir, ["/bin/busybox", "true"], oci_runtime="bench-no-such-oci-runtime")
    with pytest.raises(BenchError, match=spec.name):
        docker_runtime.start(spec)
    assert not any(spec.name in item for item in docker_runtime.leftovers())
    assert not (io_dir / "ctl").exists()


def test_footprint_and_version(docker_runtime: DockerRuntime) -> None:
    import psutil

    pids = docker_runtime.footprint_pids()
    names = {psutil.Process(pid).name() for pid in pids}
    assert "dockerd" in names
    assert re.match(r"\d+\.\d+", docker_runtime.version())


def test_missing_daemon_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    socket = tmp_path / "no-docker.sock"
    runtime = DockerRuntime(base_url=f"unix://{socket}")
    availability = runtime.available()
    runtime.close()
    assert not availability.ok
    assert str(socket) in availability.reason
    assert "dockerd" in availability.fix
