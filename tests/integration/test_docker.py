"""DockerRuntime against a real dockerd: its own view, the stats API, OCI runtimes.

The checks every container runtime passes are in test_container_contract.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from bench.runtimes._container import ContainerHandle
from bench.runtimes.docker import DockerRuntime
from bench.spec import Limits
from tests import helpers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cgroup_is_the_one_docker_reports(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    helpers.check_engine_view(docker_runtime, started, io_dir)


def test_explicit_oci_runtime_is_used(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    spec = helpers.make_spec(io_dir, ["/bin/busybox", "true"], oci_runtime="runc")
    handle = helpers.start(docker_runtime, started, spec)
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == 0
    assert helpers.engine_inspect("docker", spec.name)["HostConfig"]["Runtime"] == "runc"


def test_failed_start_leaves_no_container(docker_runtime: DockerRuntime, io_dir: Path) -> None:
    oci = "bench-no-such-oci-runtime"
    helpers.check_failed_start(
        docker_runtime, helpers.make_spec(io_dir, ["/bin/busybox", "true"], oci_runtime=oci)
    )


def test_footprint_and_version(docker_runtime: DockerRuntime) -> None:
    names = {psutil.Process(pid).name() for pid in docker_runtime.footprint_pids()}
    assert {"dockerd", "containerd"} <= names
    assert docker_runtime.version()[0].isdigit()


def test_missing_daemon_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    socket, availability = helpers.availability_without_daemon(DockerRuntime, tmp_path)
    assert not availability.ok
    assert socket in availability.reason
    assert "dockerd" in availability.fix


def test_numbers_match_docker_stats(
    docker_runtime: DockerRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """What users check bench against: the stats API (`docker stats`) on the same container.

    Each value of one stats call must lie between bench's reads just before and after it
    (memory within 2 % of that range: the vm stressor's pages move a little).
    """
    import docker

    from bench.cgroups import open_reader
    from bench.image import STRESS_NG

    argv = [str(STRESS_NG), "--vm", "1", "--vm-bytes", "64m", "--vm-keep", "--timeout", "20s"]
    spec = helpers.make_spec(io_dir, argv, limits=Limits(cpus=0.5, pids=64))
    handle = helpers.start(docker_runtime, started, spec)
    reader = open_reader(handle.cgroup)
    client = docker.from_env()
    try:
        time.sleep(3.0)  # the 64 MiB are mapped and touched: memory is steady
        before = reader.read()
        stats = client.containers.get(spec.name).stats(stream=False)
        after = reader.read()
    finally:
        reader.close()
        client.close()
    cpu, memory = stats["cpu_stats"], stats["memory_stats"]
    seen = f"bench before {before}\nbench after {after}\ndocker {cpu} {memory}"
    scale = 1 if handle.cgroup.version == "v1" else 1000  # docker's v2 usage is usec -> ns
    assert before.cpu_usage_ns <= cpu["cpu_usage"]["total_usage"] * scale <= after.cpu_usage_ns
    throttled = cpu["throttling_data"]["throttled_periods"]
    assert before.cpu_nr_throttled <= throttled <= after.cpu_nr_throttled, seen
    assert after.cpu_nr_throttled > 0, seen  # 0.5 CPU for a busy worker: it is throttled
    assert stats["pids_stats"]["current"] == after.pids_current, seen

    def within(value: int, low: int, high: int) -> bool:
        return min(low, high) * 0.98 <= value <= max(low, high) * 1.02

    assert within(memory["usage"], before.mem_current_bytes, after.mem_current_bytes), seen
    # The CLI's MEM USAGE is usage minus inactive file pages: bench's working set.
    inactive_key = "total_inactive_file" if handle.cgroup.version == "v1" else "inactive_file"
    working_set = memory["usage"] - memory["stats"][inactive_key]
    assert within(working_set, before.mem_working_set_bytes, after.mem_working_set_bytes), seen
    assert after.mem_current_bytes > 64 * helpers.MIB, seen
