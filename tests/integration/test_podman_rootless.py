"""podman-rootless: the cgroup bench measures is the one its init pid runs in and the one
podman reports (v2: with the limits podman set through the delegated cgroup), and its
published path under real traffic beside rootful podman's: the TCP round trips it gives,
and where its forwarder (rootlessport, in user space) is measured."""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from bench.cgroups import open_reader
from bench.cgroups.locate import host_cgroup_version, locate
from bench.runtimes import podman_rootless
from bench.spec import Limits, StartSpec
from tests.helpers import (
    check_engine_inspect,
    check_hardening,
    limit_file,
    make_spec,
    start_sleeper,
)

if TYPE_CHECKING:
    from bench.runtimes._container import ContainerHandle
    from bench.runtimes.base import Runtime
    from bench.runtimes.podman_rootless import PodmanRootlessRuntime

pytestmark = pytest.mark.integration

PORT = 7007
MESSAGE = b"m" * 64
TRAFFIC_S = 2.0
READY_TIMEOUT_S = 15.0
# An echo server of busybox (in the image): nc runs cat on each connection.
ECHO = ["/bin/busybox", "nc", "-ll", "-p", str(PORT), "-e", "/bin/busybox", "cat"]


def test_cgroup_is_the_one_rootless_podman_reports(
    podman_rootless_runtime: PodmanRootlessRuntime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """v2: the container's own cgroup, made by podman in the delegated one, with its limit;
    v1: bench's cgroup (rootless podman makes none there). conmon: in the footprint."""
    delegated = host_cgroup_version() == "v2"
    limits = Limits(pids=64) if delegated else Limits()
    spec, handle = start_sleeper(podman_rootless_runtime, started, io_dir, limits=limits)
    proc = podman_rootless.as_user("inspect", "--type", "container", spec.name)
    assert proc.returncode == 0, proc.stderr
    (inspect,) = json.loads(proc.stdout)
    own = locate(handle.pid)
    for controller, directory in handle.cgroup.dirs.items():
        assert own.dirs[controller] == directory, controller
    check_hardening(handle, spec)
    if delegated:
        check_engine_inspect(inspect, handle)
        (directory,) = handle.cgroup.dirs.values()
        assert str(directory).endswith(inspect["State"]["CgroupPath"])
        assert directory.parent.name == spec.name  # below the cgroup bench delegated
        assert limit_file(handle.cgroup, "pids", "", "pids.max") == "64"
    else:
        assert inspect["State"]["Pid"] == handle.pid
        assert {d.name for d in handle.cgroup.dirs.values()} == {spec.name}
    assert inspect["State"]["ConmonPid"] in podman_rootless_runtime.footprint_pids()


def round_trip(sock: socket.socket) -> float:
    began = time.perf_counter()
    sock.sendall(MESSAGE)
    got = b""
    while len(got) < len(MESSAGE):
        chunk = sock.recv(len(MESSAGE) - len(got))
        assert chunk, "the echo server closed the connection"
        got += chunk
    assert got == MESSAGE
    return time.perf_counter() - began


def connect_when_echoing(address: tuple[str, int]) -> socket.socket:
    """A connection through the published port once the server inside echoes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        sock = socket.create_connection(address, timeout=2.0)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            round_trip(sock)
            return sock
        except (OSError, AssertionError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def spec(io_dir: Path) -> StartSpec:
    base = make_spec(io_dir, ECHO)
    return StartSpec(
        name=base.name, argv=base.argv, io_dir=io_dir, network="published", ports=(PORT,)
    )


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


@pytest.mark.parametrize("engine", ["podman", "podman-rootless"])
def test_published_echo_round_trips_and_where_the_path_is_measured(
    engine: str, request: pytest.FixtureRequest, io_dir: Path, started: list[ContainerHandle]
) -> None:
    runtime: Runtime = request.getfixturevalue(f"{engine.replace('-', '_')}_runtime")
    handle = runtime.start(spec(io_dir))
    started.append(handle)  # type: ignore[arg-type]
    address = handle.endpoint(PORT)
    assert address[0] == "127.0.0.1"
    procs = {p.pid: p.name() for p in map(psutil.Process, cgroup_pids(handle))}
    # Beside the container's cgroup: rootful podman's conmon; rootless podman's helpers on v2
    # (in the delegated cgroup's launch leaf).
    around = {p.pid: p.name() for p in map(psutil.Process, runtime.footprint_pids())}
    # rootlessport listens on the host and its child ("exe") connects inside the container's
    # network namespace: every published byte passes both (slirp4netns carries the
    # container's own outbound traffic, not this path).
    helpers = procs | around
    forwarders = [pid for pid, name in helpers.items() if name in ("rootlessport", "exe")]
    reader = open_reader(handle.cgroup)
    rtts: list[float] = []
    with connect_when_echoing(address) as sock:
        cgroup_before, forwarders_before = reader.read().cpu_usage_ns / 1e9, cpu_s(forwarders)
        deadline = time.monotonic() + TRAFFIC_S
        while time.monotonic() < deadline:
            rtts.append(round_trip(sock))
        cgroup_s = reader.read().cpu_usage_ns / 1e9 - cgroup_before
        forwarders_s = cpu_s(forwarders) - forwarders_before
    reader.close()
    median_us = statistics.median(rtts) * 1e6
    print(
        f"\n{engine} published: {len(rtts) / TRAFFIC_S:.0f} round trips/s, median "
        f"{median_us:.0f} us, p99 {statistics.quantiles(rtts, n=100)[98] * 1e6:.0f} us; "
        f"cgroup CPU {cgroup_s:.2f} s, forwarders {forwarders_s:.2f} s; in the cgroup: "
        f"{sorted(procs.values())}"
    )
    assert len(rtts) > 0
    if engine == "podman-rootless" and host_cgroup_version() == "v2":
        # The container has its own cgroup; the user-space path runs beside it.
        assert {"slirp4netns", "rootlessport", "exe", "conmon"} <= set(around.values()), around
        assert forwarders_s > 0
    elif engine == "podman-rootless":
        # The user-space network path runs in the trial's cgroup, and works there.
        assert {"slirp4netns", "rootlessport", "exe", "conmon"} <= set(procs.values()), procs
        assert forwarders_s > 0
        assert cgroup_s >= forwarders_s
    else:
        # Rootful podman forwards in the kernel; its conmon is outside the container's cgroup.
        assert "slirp4netns" not in procs.values() and "conmon" not in procs.values(), procs


def cgroup_pids(handle: ContainerHandle) -> list[int]:
    directory = handle.cgroup.dir_for("pids") or handle.cgroup.dir_for("memory")
    assert directory is not None
    return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]


def test_a_cpuset_pins_the_container_and_not_its_network_helpers(
    podman_rootless_runtime: Runtime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """What pins a service's server apart from its client: only the container's processes
    get the cpuset (CPU affinity where podman cannot apply it, as on v1); rootlessport,
    slirp4netns and conmon keep every CPU, as docker-proxy and rootful conmon do."""
    every_cpu = os.sched_getaffinity(0)
    if len(every_cpu) < 2:
        pytest.skip("pinning shows only with two CPUs or more")
    base = spec(io_dir)
    pinned = StartSpec(
        name=base.name,
        argv=base.argv,
        io_dir=io_dir,
        network="published",
        ports=(PORT,),
        limits=Limits(cpuset="0"),
    )
    handle = podman_rootless_runtime.start(pinned)
    started.append(handle)  # type: ignore[arg-type]
    connect_when_echoing(handle.endpoint(PORT)).close()
    tree = [handle.pid, *(p.pid for p in psutil.Process(handle.pid).children(recursive=True))]
    assert {pid: os.sched_getaffinity(pid) for pid in tree} == dict.fromkeys(tree, frozenset({0}))
    helpers = {pid: psutil.Process(pid).name() for pid in handle.helper_pids()}
    assert {"rootlessport", "slirp4netns", "conmon"} <= set(helpers.values()), helpers
    assert {pid: os.sched_getaffinity(pid) for pid in helpers} == dict.fromkeys(
        helpers, frozenset(every_cpu)
    )
