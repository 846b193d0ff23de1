"""systemd-nspawn: the image's rootfs as a container, in a cgroup bench creates.

Without systemd as PID 1 (and with --keep-unit, --register=no where it runs) nspawn stays
in its caller's cgroup, so bench starts it inside a cgroup it creates with the shared
limits, as for bare metal; nspawn adds `supervisor/` and `payload/` below it in the
name=systemd and unified hierarchies, removed with the cgroup. bench measures its own
cgroup, where the limits are, nspawn's supervisor included: on a v1 host the controllers
see nothing else, and on pure v2 the init pid's `payload/` has no limits of its own
(cpu.max "max" there, found in the cgroup v2 VM). docs/runtimes.md, "systemd-nspawn",
says which case was tested.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cgroups.manage import FIX_ROOT, create_cgroup
from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes._container import (
    IO_MOUNT,
    ContainerHandle,
    Launched,
    image_to_start,
    rootfs_in_place,
    start_container,
    undone_on_error,
)
from bench.runtimes._process import exited_early, running_pids, spawn
from bench.runtimes.base import Availability

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

INSTALL_FIX = "apt-get install systemd-container"
LOG_FILE = "nspawn.log"
PID_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_RLIMIT_NAMES = {"nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC"}
_NSPID = re.compile(r"^NSpid:\s+(\d+)\s+1$", re.M)


def nspawn_argv(spec: StartSpec, rootfs: Path, command: list[str]) -> list[str]:
    """The systemd-nspawn command line of one container (the same container as docker's)."""
    if spec.user is not None:
        raise BenchError(
            f"{spec.name}: systemd-nspawn resolves --user with getent inside the container, "
            "which the workload image does not have; remove `user` or leave systemd-nspawn out"
        )
    io_dir = str(Path(spec.io_dir).resolve())
    if ":" in io_dir:
        raise BenchError(f"{io_dir}: systemd-nspawn cannot bind a path with ':'; move the results")
    argv = [
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
        f"--directory={rootfs}", "--read-only", "--tmpfs=/tmp",
        f"--bind={io_dir}:{IO_MOUNT}", f"--chdir={IO_MOUNT}",
        "--drop-capability=all", "--no-new-privileges=yes",
        "--resolv-conf=off", "--timezone=off", "--link-journal=no",
        *(f"--rlimit={_RLIMIT_NAMES[n]}={soft}:{hard}" for n, soft, hard in spec.rlimits),
    ]  # fmt: skip
    if spec.network == "none":
        argv.append("--private-network")  # lo only, brought up by nspawn
    return [*argv, "--", *command]


def container_init(monitor_pid: int) -> int | None:
    """The host pid of the container's PID 1 among nspawn's descendants, once it exists."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(monitor_pid).children(recursive=True):
            with contextlib.suppress(OSError):
                if _NSPID.search(Path(f"/proc/{child.pid}/status").read_text()):
                    return child.pid
    return None


class NspawnRuntime:
    """Runs the wrapper under systemd-nspawn in a bench cgroup (implements Runtime)."""

    name = "systemd-nspawn"

    def __init__(self) -> None:
        self._rootfs: Path | None = None
        self._monitors: dict[str, subprocess.Popen[bytes]] = {}

    def available(self) -> Availability:
        if shutil.which("systemd-nspawn") is None:
            return Availability(False, "systemd-nspawn is not installed", INSTALL_FIX)
        if os.geteuid() != 0:
            return Availability(False, "systemd-nspawn needs root", FIX_ROOT)
        return Availability(True)

    def version(self) -> str:
        if shutil.which("systemd-nspawn") is None:
            raise RuntimeUnavailable(f"systemd-nspawn is not installed; fix: {INSTALL_FIX}")
        first = subprocess.run(
            ["systemd-nspawn", "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        where = "under systemd" if Path("/run/systemd/system").is_dir() else "bench cgroup"
        return f"{first[0] if first else '?'} ({where})"

    def default_oci_runtime(self) -> None:
        """No OCI runtime: nspawn sets the container up itself."""

    def prepare(self, image: WorkloadImage) -> None:
        """nspawn runs the image's rootfs directory in place, read-only (as LXC does)."""
        self._rootfs = rootfs_in_place(image)

    def start(self, spec: StartSpec) -> ContainerHandle:
        prepared = None if self._rootfs is None else str(self._rootfs)
        rootfs = Path(image_to_start(spec, self.name, prepared))

        def launch(command: list[str]) -> Launched:
            argv = nspawn_argv(spec, rootfs, command)
            managed = create_cgroup(spec.name, spec.limits)
            with undone_on_error(managed.remove), (spec.io_dir / LOG_FILE).open("wb") as log:
                # The child joins the cgroup before exec.
                monitor = spawn(argv, log, preexec_fn=managed.join_current_process)
            self._monitors[spec.name] = monitor

            def kill() -> None:
                managed.kill_all()

            def remove() -> None:
                managed.kill_all()
                try:
                    monitor.wait(timeout=STOP_TIMEOUT_S)
                finally:
                    self._monitors.pop(spec.name, None)
                    managed.remove()

            with undone_on_error(remove):
                pid = self._wait_for_init(spec, monitor)

            def poll_exit() -> int | None:
                code = monitor.poll()  # nspawn's own exit: the container's, or -N when killed
                return None if code is None else (128 - code if code < 0 else code)

            return Launched(pid, kill, remove, poll_exit, cgroup=managed.location)

        return start_container(spec, launch)

    def _wait_for_init(self, spec: StartSpec, monitor: subprocess.Popen[bytes]) -> int:
        deadline = time.monotonic() + PID_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = container_init(monitor.pid)
            if pid is not None:
                return pid
            if monitor.poll() is not None:
                log_path = spec.io_dir / LOG_FILE
                before = "its container ran"
                raise exited_early("systemd-nspawn", spec.name, monitor, log_path, before)
            time.sleep(0.005)
        raise BenchError(f"systemd-nspawn started no container for {spec.name} in time")

    def footprint_pids(self) -> list[int]:
        """The nspawn processes (outside the container's pid namespace) of running containers."""
        return running_pids(self._monitors.values())

    def leftovers(self) -> list[str]:
        """None of its own: its processes live in bench cgroups, which bare metal's gc removes."""
        return []

    def remove_leftovers(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing to release: each handle's stop() ended its nspawn."""
