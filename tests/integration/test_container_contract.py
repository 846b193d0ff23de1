"""Checks every container runtime must pass: docker, podman (rootful and rootless), lxc,
lxc-system, lxd, containerd, nspawn.

Each check starts real containers through `container_runtime` (tests/integration/
conftest.py) and reads their cgroup files. What only one runtime has is tested in its own
module (test_docker.py, test_podman.py, test_lxc.py).
"""

from __future__ import annotations

import os
import time
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from bench.cgroups import CgroupGone, open_reader
from bench.cgroups.locate import host_cgroup_version
from bench.image import STRESS_NG
from bench.runtimes import registry
from bench.runtimes._container import ContainerHandle
from bench.runtimes.base import Runtime
from bench.spec import CPU_PERIOD_US, Limits
from tests.helpers import (
    MIB,
    kernel_at_least,
    limit_file,
    make_spec,
    snapshot,
    start,
    start_sleeper,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXIT_CASES = [
    (["/bin/busybox", "sh", "-c", "exit 3"], 3),
    (["/usr/bin/bench-not-in-image"], 127),
    (["/bin/busybox", "sh", "-c", "kill -9 $$"], 137),
    (["/bin/busybox", "touch", "/read-only-rootfs"], 1),
]
# A kernel of their own between the workload and the host (gVisor): what the workload
# reads of itself is that kernel's view.
SANDBOXED = ("podman+runsc", "docker+runsc")
# The exit code wait() reports for a container killed from outside; None: any non-zero
# (lxc-execute reports its own failure status, not a signal number, after lxc-stop -k).
KILLED_EXIT_CODE = {
    "docker": 137,
    "podman": 137,
    "podman-rootless": 137,
    "lxc": None,
    "lxc-system": None,
    "lxd": None,
    "containerd": 137,
    "systemd-nspawn": None,
    "podman+runsc": 137,
    "docker+runsc": 137,
    "podman+crun": 137,
    "docker+crun": 137,
}


def limits_refusal(runtime: Runtime) -> str:
    """Why `runtime` cannot apply limits on this host ("" when it can: every rootful one)."""
    name = runtime.name.partition("+")[0]
    capabilities = registry.entry(name).capabilities
    return capabilities.limits_refusal(name, host_cgroup_version(), ("cpus", "memory_bytes"))


def skip_without_limits(runtime: Runtime) -> None:
    """A limit's check does not apply where the runtime cannot apply limits (rootless on v1)."""
    refusal = limits_refusal(runtime)
    if refusal:
        pytest.skip(refusal)


def test_cpu_workload_runs_and_writes_metrics(
    container_runtime: Runtime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """A cpu stressor exits 0, writes metrics.yaml, and the cgroup agrees on CPU time."""
    argv = [str(STRESS_NG), "--cpu", "1", "--timeout", "2s", "--metrics", "--yaml", "metrics.yaml"]
    limits = Limits() if limits_refusal(container_runtime) else Limits(cpus=1.0)
    handle = start(container_runtime, started, make_spec(io_dir, argv, limits=limits))
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None and exit_info.exit_code == 0, (io_dir / "stderr.txt").read_text()
    # The wrapper keeps the container and its cgroup alive: final counters are readable.
    cpu_s = snapshot(handle.cgroup).cpu_usage_ns / 1e9
    metrics = yaml.safe_load((io_dir / "metrics.yaml").read_text())
    (cpu,) = [m for m in metrics["metrics"] if m["stressor"] == "cpu"]
    bogo_ops_per_s = float(cpu["bogo-ops-per-second-real-time"])
    stop_s = handle.stop()
    print(
        f"\n{container_runtime.name} cpu: {bogo_ops_per_s:.1f} bogo-ops/s, cgroup cpu "
        f"{cpu_s:.2f} s, start {handle.start_latency_s * 1000:.0f} ms, "
        f"stop {stop_s * 1000:.0f} ms"
    )
    assert bogo_ops_per_s > 0
    # The cgroup holds the worker, so it counts at least the worker's own seconds, plus the
    # start-up of the shell and stress-ng's parent: small here, large under TCG emulation
    # (BENCH_V2VM, tests/v2vm: the cgroup counted 2.60 s for one 2 s worker there).
    own_cpu_s = float(cpu["user-time"]) + float(cpu["system-time"])
    startup_s = 1.0 if os.environ.get("BENCH_V2VM") else 0.1
    if container_runtime.name in SANDBOXED:
        # The sandbox's kernel boots in the container's cgroup: 0.14 s median for a no-op
        # container here (docs/runtimes.md), up to twice that under load.
        startup_s += 0.3
        # stress-ng's own times come from the sandbox's kernel, which charges a task while
        # it is runnable in its own view: 1.78 s against the host's 1.51 s was seen here.
        assert own_cpu_s * 0.5 <= cpu_s <= own_cpu_s * 1.1 + startup_s
    else:
        assert own_cpu_s - 0.05 <= cpu_s <= own_cpu_s * 1.1 + startup_s
    assert cpu_s < 2.0 + startup_s + 0.4  # one worker for 2 s
    assert 0 < handle.start_latency_s < 30
    assert 0 < stop_s < 5  # a kill, not a SIGTERM grace period
    assert handle.stop() == 0.0
    assert not any(directory.exists() for directory in handle.cgroup.dirs.values())
    assert not (io_dir / "ctl").exists()
    # Stopped: nothing of the container is left (LXC: its config and lxcpath directory).
    assert not any(handle.name in item for item in container_runtime.leftovers())


def test_cpu_quota_half_a_cpu(
    container_runtime: Runtime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """cpus=0.5 writes quota/period and one busy worker gets 0.5 CPU ± 0.05."""
    skip_without_limits(container_runtime)
    argv = [str(STRESS_NG), "--cpu", "1", "--timeout", "6s"]
    handle = start(container_runtime, started, make_spec(io_dir, argv, limits=Limits(cpus=0.5)))
    if handle.cgroup.version == "v1":
        quota = limit_file(handle.cgroup, "cpu", "cpu.cfs_quota_us", "")
        period = limit_file(handle.cgroup, "cpu", "cpu.cfs_period_us", "")
    else:
        quota, period = limit_file(handle.cgroup, "cpu", "", "cpu.max").split()
    assert (int(quota), int(period)) == (50_000, CPU_PERIOD_US)
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
    print(
        f"\n{container_runtime.name} cpus=0.5: CPU rate {overall:.3f} over 4 s "
        f"(1 s windows: {', '.join(f'{r:.3f}' for r in rates)})"
    )
    # The cap holds in every window; other load on a small host can only take CPU away,
    # so the best window shows what the quota grants.
    assert max(rates) <= 0.55
    assert max(rates) == pytest.approx(0.5, abs=0.05), f"load average {os.getloadavg()}"


def test_memory_limit_oom_kills_are_counted(
    container_runtime: Runtime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """400 MiB of vm stressor in a 256 MiB cgroup without swap: oom_kill > 0 after wait."""
    skip_without_limits(container_runtime)
    argv = [
        str(STRESS_NG), "--vm", "1", "--vm-bytes", "400m", "--oomable", "--timeout", "10s",
    ]  # fmt: skip
    spec = make_spec(io_dir, argv, limits=Limits(memory_bytes=256 * MIB))
    handle = start(container_runtime, started, spec)
    limit = limit_file(handle.cgroup, "memory", "memory.limit_in_bytes", "memory.max")
    assert int(limit) == 256 * MIB
    memory_dir = handle.cgroup.dir_for("memory")
    assert memory_dir is not None
    swap_file = "memory.memsw.limit_in_bytes" if handle.cgroup.version == "v1" else ""
    if handle.cgroup.version == "v2":
        assert (memory_dir / "memory.swap.max").read_text().strip() == "0"
    elif (memory_dir / swap_file).exists():
        assert int((memory_dir / swap_file).read_text()) == 256 * MIB
    exit_info = handle.wait(timeout_s=60)
    assert exit_info is not None, "stress-ng did not finish"
    try:
        final = snapshot(handle.cgroup)
    except CgroupGone:
        # A sandbox (gVisor) dies whole and its engine removes the cgroup at once: bench
        # keeps the read its OOM watch took, as a trial's final read does.
        totals = handle.totals_after_exit()
        assert totals is not None, "the cgroup is gone and no read of it was kept"
        final = totals
    print(
        f"\n{container_runtime.name} 256 MiB vs 400 MiB: {final.oom_kill_count} oom kills, "
        f"peak {final.mem_peak_bytes} bytes, exit {exit_info.exit_code}"
    )
    assert final.oom_kill_count > 0
    if handle.cgroup.version == "v2" and kernel_at_least(5, 19):
        # memory.peak exists since 5.19; on v2 it is the only source of the peak.
        assert final.mem_peak_bytes is not None, "memory.peak was not read on cgroup v2"
    # The kernel OOM-kills when a charge would pass the limit: the peak reached it. A task
    # already being killed may still charge past memory.max (mm/memcontrol.c, try_charge's
    # force path): docker+runsc peaked at the limit + 4096 bytes once in the v2 VM. Bound
    # that by one per-CPU charge batch (64 pages), the counter's resolution.
    overshoot_bytes = 64 * os.sysconf("SC_PAGE_SIZE")
    assert final.mem_peak_bytes is None or (
        0.9 * 256 * MIB <= final.mem_peak_bytes <= 256 * MIB + overshoot_bytes
    )


@pytest.mark.parametrize(("argv", "expected"), EXIT_CASES)
def test_exit_codes_pass_through(
    container_runtime: Runtime,
    io_dir: Path,
    started: list[ContainerHandle],
    argv: list[str],
    expected: int,
) -> None:
    handle = start(container_runtime, started, make_spec(io_dir, argv))
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == expected


def test_network_is_off_and_workdir_is_the_io_dir(
    container_runtime: Runtime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """Only loopback, and it is up (IFF_UP|IFF_LOOPBACK = 0x9): loopback stressors work."""
    # gVisor's sysfs has no flags file: its own netlink answers `ip link` instead.
    flags = (
        "cat /sys/class/net/lo/flags 2>/dev/null || "
        "/bin/busybox ip -o link show lo | /bin/busybox sed 's/.*<\\(.*\\)>.*/\\1/'"
    )
    script = f'ls /sys/class/net; {flags}; pwd; echo "$0" > out.txt'
    argv = ["/bin/busybox", "sh", "-c", script, "hello"]
    handle = start(container_runtime, started, make_spec(io_dir, argv))
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == 0
    names, flag_text, workdir = (io_dir / "stdout.txt").read_text().split()
    assert (names, workdir) == ("lo", "/bench")
    if flag_text.startswith("0x"):
        assert int(flag_text, 16) & 0x9 == 0x9, flag_text
    else:
        assert {"LOOPBACK", "UP"} <= set(flag_text.split(",")), flag_text
    assert (io_dir / "out.txt").read_text() == "hello\n"


def test_wait_times_out_while_the_workload_runs(
    container_runtime: Runtime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    _, handle = start_sleeper(container_runtime, started, io_dir)
    began = time.monotonic()
    assert handle.wait(timeout_s=1.5) is None
    assert 1.4 < time.monotonic() - began < 5


def test_wait_notices_a_container_killed_from_outside(
    container_runtime: Runtime, io_dir: Path, started: list[ContainerHandle]
) -> None:
    """Killing the container from outside (no "E" line ever comes) still ends wait()."""
    _, handle = start_sleeper(container_runtime, started, io_dir)
    handle.kill()
    exit_info = handle.wait(timeout_s=15)
    assert exit_info is not None
    expected = KILLED_EXIT_CODE[container_runtime.name]
    if expected is None:
        assert exit_info.exit_code != 0
    else:
        assert exit_info.exit_code == expected
