"""Helpers shared by the test modules (conftest-free: any test may import this module).

Skips that fail under CI, the real `bench` command, the dockerd check, BenchExec's
runexec, and what every container runtime's tests start and inspect.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bench.cgroups.model import CgroupLocation, CgroupSnapshot
    from bench.runtimes._container import ContainerHandle
    from bench.runtimes.base import Availability, Runtime
    from bench.spec import StartSpec

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
IN_VM = os.environ.get("BENCH_V2VM") == "1"
# Other sessions may run bench on this host meanwhile: test cgroups carry this pid.
CGROUP_PREFIX = f"bench-t{os.getpid()}-"


# 3 measured repetitions of a 1 s cpu stressor (+1 discarded warm-up, which absorbs the
# first docker start and a cold page cache) per runtime: about 15 s with bare + docker.
TINY_SCENARIO = """\
name = "bench-e2e-tiny"
description = "e2e tests: 1 s cpu stressor x 3 repetitions"
runtimes = {runtimes}
repetitions = 3
warmups = 1
sample_interval_ms = 100
timeout_s = 30

[limits]
cpus = 1
memory = "256m"
pids = 256

[[workloads]]
name = "cpu"
stressor = "cpu"
workers = 1
duration_s = 1
options = {{ cpu-method = "matrixprod" }}
"""


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI=true) when `condition` is false.

    CI installs every runtime, so a missing one there is a broken setup, not a skip.
    """
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root to create cgroups and run containers")


def bench(*args: str, cwd: Path = REPO, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (`python -m bench`) and capture its output; never raises on exit codes."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@dataclass(frozen=True)
class RealRun:
    """A finished `bench run` of a small scenario (tests/e2e/conftest.py makes them)."""

    run_dir: Path
    run_id: str
    runtimes: tuple[str, ...]
    scenario: Path


PYTEST_BENCHMARK = Path(sys.executable).with_name("pytest-benchmark")


def pytest_benchmark_compare(args: list[str], cwd: Path) -> str:
    """`pytest-benchmark compare ARGS`: its stdout, after checking it loaded every file."""
    proc = subprocess.run(
        [str(PYTEST_BENCHMARK), "compare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.stdout


# --- dockerd ----------------------------------------------------------------------------

DOCKER_SOCKET = Path("/var/run/docker.sock")
DOCKERD_READY_TIMEOUT_S = 60.0


def docker_answers() -> bool:
    from bench.runtimes.docker import DockerRuntime

    runtime = DockerRuntime()
    try:
        return runtime.available().ok
    finally:
        runtime.close()


def ensure_dockerd(log_path: Path, timeout_s: float = DOCKERD_READY_TIMEOUT_S) -> str:
    """Start dockerd in the background unless a daemon already answers; "" or why not.

    The daemon is left running: CI starts it before the tests anyway, and stopping it
    would break anyone else using it. Its log goes to `log_path`.
    """
    if docker_answers():
        return ""
    if os.environ.get("DOCKER_HOST"):
        return f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return "dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "dockerd is not running and only root can start it"
    # Someone else may be starting it right now: give an existing dockerd time first.
    if not _dockerd_process_exists():
        with log_path.open("ab") as log:
            subprocess.Popen(
                [dockerd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the test session; CI may reuse it
            )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if DOCKER_SOCKET.exists() and docker_answers():
            return ""
        time.sleep(0.5)
    return f"dockerd did not answer within {timeout_s:.0f} s; see {log_path}"


def _dockerd_process_exists() -> bool:
    import psutil

    return any(p.info["name"] == "dockerd" for p in psutil.process_iter(["name"]))


def availability_without_daemon(
    make: Callable[..., Runtime], tmp_path: Path
) -> tuple[str, Availability]:
    """What a runtime says when its API socket does not exist; and that socket's path."""
    socket = str(tmp_path / "no-daemon.sock")
    runtime = make(base_url=f"unix://{socket}")
    try:
        return socket, runtime.available()
    finally:
        runtime.close()


# --- BenchExec, the reference for bare-metal numbers -------------------------------------

RUNEXEC = Path(sys.executable).with_name("runexec")  # the venv running the tests


def runexec(argv: list[str], cwd: Path | None = None) -> dict[str, str]:
    """BenchExec's measurement of the same command (run in `cwd`): its key=value lines.

    On v2 without systemd BenchExec needs a cgroup of its own that it may split: it gets
    a fresh bench cgroup (removed with whatever BenchExec made inside it).
    """
    from bench.cgroups import create_cgroup
    from bench.spec import Limits

    require(RUNEXEC.exists(), f"{RUNEXEC} missing: pip install benchexec")
    own = create_cgroup(f"{CGROUP_PREFIX}runexec", Limits())
    try:
        proc = subprocess.run(
            [str(RUNEXEC), "--no-container", "--output", "/dev/null", "--", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=cwd,
            preexec_fn=own.join_current_process,
        )
    finally:
        own.kill_all()
        own.remove()  # with the child cgroups BenchExec made inside it
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0 or "memory" not in values or "cputime" not in values:
        reason = f"runexec failed (rc {proc.returncode}): {proc.stderr.strip()[-400:]}"
        if IN_VM:
            pytest.skip(reason)
        pytest.fail(reason)
    return values


# --- containers: what every container runtime's tests start and inspect ---------------


def make_spec(io_dir: Path, argv: list[str], **kwargs: object) -> StartSpec:
    from bench.spec import StartSpec

    name = f"bench-test-{uuid.uuid4().hex[:10]}"
    return StartSpec(name=name, argv=tuple(argv), io_dir=io_dir, **kwargs)  # type: ignore[arg-type]


class WithOciRuntime:
    """An engine whose every start() names OCI runtime `oci` (a scenario's oci_runtimes axis)."""

    def __init__(self, engine: Runtime, oci: str) -> None:
        self.engine, self.oci = engine, oci
        self.name = f"{engine.name}+{oci}"

    def start(self, spec: StartSpec) -> Any:
        from dataclasses import replace

        return self.engine.start(replace(spec, oci_runtime=self.oci))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.engine, attr)


def start(runtime: Runtime, started: list[ContainerHandle], spec: StartSpec) -> ContainerHandle:
    """Start `spec` and record the handle in `started` (the fixture stops it)."""
    from bench.runtimes._container import ContainerHandle

    handle = runtime.start(spec)
    assert isinstance(handle, ContainerHandle)
    started.append(handle)
    return handle


def start_sleeper(
    runtime: Runtime, started: list[ContainerHandle], io_dir: Path, **kwargs: object
) -> tuple[StartSpec, ContainerHandle]:
    """A container whose workload sleeps 30 s, to inspect while it runs (`started` stops it)."""
    spec = make_spec(io_dir, ["/bin/busybox", "sleep", "30"], **kwargs)
    return spec, start(runtime, started, spec)


def check_failed_start(runtime: Runtime, spec: StartSpec) -> None:
    """Starting `spec` fails with an error naming it, and leaves no container and no FIFO."""
    from bench.errors import BenchError

    with pytest.raises(BenchError, match=spec.name):
        runtime.start(spec)
    assert not any(spec.name in item for item in runtime.leftovers())
    assert not (spec.io_dir / "ctl").exists()


def check_run_and_stop(
    runtime: Runtime, io_dir: Path, started: list[ContainerHandle], *, boots: bool
) -> None:
    """Run `true`; a system container (`boots`) was booted within the start; once stopped,
    nothing of it is left (lxc's config, lxd's instance), nor a monitor or attach process."""
    from bench.runtimes.lxc_system import BOOT_FIFO

    handle = start(runtime, started, make_spec(io_dir, ["/bin/busybox", "true"]))
    exit_info = handle.wait(timeout_s=30)
    assert exit_info is not None and exit_info.exit_code == 0
    if boots:
        assert handle.boot_s is not None
        print(
            f"\n{runtime.name} boot {handle.boot_s * 1000:.1f} ms, "
            f"start {handle.start_latency_s * 1000:.1f} ms"
        )
        # The boot is part of the start: the workload runs once the init is up.
        assert 0 < handle.boot_s < handle.start_latency_s
        assert not (io_dir / BOOT_FIFO).exists()
    else:
        assert handle.boot_s is None
    handle.stop()
    assert not any(handle.name in item for item in runtime.leftovers())
    assert runtime.footprint_pids() == []


def sleeper_as(
    runtime: Runtime,
    started: list[ContainerHandle],
    io_dir: Path,
    user: tuple[int, int],
    **kwargs: object,
) -> tuple[StartSpec, ContainerHandle]:
    """start_sleeper with the workload as `user`, who owns the io dir as under bench's runner
    (the workload's output goes there)."""
    os.chown(io_dir, *user)
    return start_sleeper(runtime, started, io_dir, user=user, **kwargs)


def snapshot(location: CgroupLocation) -> CgroupSnapshot:
    from bench.cgroups import open_reader

    reader = open_reader(location)
    try:
        return reader.read()
    finally:
        reader.close()


def limit_file(location: CgroupLocation, controller: str, v1_name: str, v2_name: str) -> str:
    directory = location.dir_for(controller)
    assert directory is not None
    return (directory / (v1_name if location.version == "v1" else v2_name)).read_text().strip()


def check_engine_inspect(inspect: dict[str, Any], handle: ContainerHandle) -> None:
    """The engine's own view (docker's and podman's inspect share this layout) is bench's.

    The cgroup was located from /proc/<pid>/cgroup, yet every controller dir is the
    engine's own for this container.
    """
    assert inspect["State"]["Pid"] == handle.pid
    assert inspect["Config"]["Labels"].get("bench") == "1"
    for controller, directory in handle.cgroup.dirs.items():
        assert inspect["Id"] in str(directory), (controller, directory)


def engine_inspect(cli: str, name: str) -> dict[str, Any]:
    """`docker inspect` or `podman inspect` of container `name`: the engine's own view."""
    proc = subprocess.run(
        [cli, "inspect", "--type", "container", name], capture_output=True, text=True, check=True
    )
    (inspect,) = json.loads(proc.stdout)
    assert isinstance(inspect, dict)
    return inspect


def check_engine_view(
    runtime: Runtime, started: list[ContainerHandle], io_dir: Path
) -> tuple[ContainerHandle, dict[str, Any]]:
    """A sleeper with a pids limit, started through docker or podman (the engine's CLI is the
    runtime's name), as the engine sees it and hardened; its handle and the engine's inspect."""
    from bench.spec import Limits

    spec, handle = start_sleeper(runtime, started, io_dir, limits=Limits(pids=64))
    inspect = engine_inspect(runtime.name, spec.name)
    check_engine_inspect(inspect, handle)
    assert inspect["HostConfig"]["PidsLimit"] == 64
    assert limit_file(handle.cgroup, "pids", "pids.max", "pids.max") == "64"
    check_hardening(handle, spec)
    return handle, inspect


def lxc_info_pid(lxcpath: Path, name: str) -> int:
    """The init pid `lxc-info` reports for container `name` in `lxcpath`."""
    info = subprocess.run(
        ["lxc-info", "-P", str(lxcpath), "-n", name, "-p", "-H"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(info.stdout)


def kernel_at_least(major: int, minor: int) -> bool:
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return release is not None and (int(release[1]), int(release[2])) >= (major, minor)


def check_hardening(handle: ContainerHandle, spec: StartSpec, pid: int | None = None) -> None:
    """No capabilities, no new privileges, the caller's rlimits, the pid in its cgroup.

    `pid` is the workload's process when it is not the container's init (lxc-execute).
    """
    pid = handle.pid if pid is None else pid
    for directory in handle.cgroup.dirs.values():
        assert str(pid) in (directory / "cgroup.procs").read_text().split()
    status = Path(f"/proc/{pid}/status").read_text()
    assert re.search(r"^CapEff:\s+0+$", status, re.M), "capabilities were not all dropped"
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    limits = Path(f"/proc/{pid}/limits").read_text()
    for name, soft, hard in spec.rlimits:
        label = {"nofile": "Max open files", "nproc": "Max processes"}[name]
        assert re.search(rf"^{label}\s+{soft}\s+{hard}\s", limits, re.M), (name, limits)
