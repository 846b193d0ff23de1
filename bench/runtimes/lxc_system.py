"""LXC system containers: `lxc-start -F` boots busybox init, the workload runs through lxc-attach.

Everything but the launch is LXC's application-container runtime (bench/runtimes/lxc.py):
the same config builder and limits, the same private-lxcpath bookkeeping and cleanup. The
init is the image's static busybox with the image's /etc/inittab, whose only entry writes
"B" to a FIFO in the io dir once the init runs: the boot time. See docs/runtimes.md.
"""

from __future__ import annotations

import functools
import os
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench.errors import BenchError
from bench.runtimes._container import (
    BUSYBOX,
    IO_MOUNT,
    ControlFifo,
    Launched,
    undone_on_error,
)
from bench.runtimes._process import exited_early, running_pids, spawn
from bench.runtimes.bare import lowered_rlimits
from bench.runtimes.lxc import LxcRuntime

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

TOOLS = ("lxc-start", "lxc-attach", "lxc-info", "lxc-stop", "lxc-ls")
BOOT_FIFO = "boot"
BOOT_LINE = "B"
INITTAB = Path("etc/inittab")
BOOT_TIMEOUT_S = 30.0
CD_ARGV0 = "bench-cd"
# busybox sh's ulimit flag per rlimit bench sets (bench.runtimes.bare.lowered_rlimits).
ULIMIT_FLAGS = {resource.RLIMIT_NOFILE: "-n", resource.RLIMIT_NPROC: "-u"}


def default_lxcpath() -> Path:
    """Beside lxc's, so `bench gc` of either runtime never names the other's containers."""
    if os.geteuid() == 0:
        return Path("/var/lib/bench-lxc-system")
    return Path(f"/tmp/bench-lxc-system-{os.geteuid()}")


def init_argv() -> list[str]:
    """PID 1 of a system container: busybox init, which reads the image's inittab and reaps."""
    return [BUSYBOX, "init"]


def attached_command(command: list[str], rlimits: list[tuple[int, int, int]]) -> list[str]:
    """What lxc-attach runs: a shell that sets `rlimits`, enters the io dir and execs `command`.

    lxc-attach applies lxc.prlimit only to the init and starts in the caller's working
    directory (or /), while an application container's init gets both from its config. The
    script's text depends only on which limits are set; their values and the command
    arrive as arguments, never spliced into it. Setting them here rather than in a
    preexec_fn keeps bench's own fork (about 7 ms for a plain fork) out of the start.
    """
    steps: list[str] = []
    values: list[str] = []
    for which, soft, hard in rlimits:
        flag = ULIMIT_FLAGS[which]
        # Both limits to the hard one, then the soft one down: never soft above hard.
        steps += [f'ulimit {flag} "${len(values) + 1}"', f'ulimit -S {flag} "${len(values) + 2}"']
        values += [str(hard), str(soft)]
    script = " && ".join([*steps, f"shift {len(values)}", f"cd {IO_MOUNT}", 'exec "$@"'])
    return [BUSYBOX, "sh", "-c", script, CD_ARGV0, *values, *command]


def attach_argv(lxcpath: Path, name: str, user: tuple[int, int] | None) -> list[str]:
    """lxc-attach up to its `--`: clear environment, the scenario's user when it has one."""
    argv = ["lxc-attach", "-P", str(lxcpath), "-n", name, "--clear-env"]
    if user is not None:
        argv += ["-u", str(user[0]), "-g", str(user[1])]
    return argv


@dataclass
class LxcSystemRuntime(LxcRuntime):
    """System containers in a private lxcpath (implements Runtime; capabilities in registry)."""

    tools: ClassVar[tuple[str, ...]] = TOOLS
    # The init stays root; lxc-attach runs the workload as the scenario's user.
    init_as_user: ClassVar[bool] = False
    lxcpath: Path = field(default_factory=default_lxcpath)
    name: str = "lxc-system"
    _attached: dict[str, subprocess.Popen[bytes]] = field(
        default_factory=dict, init=False, repr=False
    )

    def default_oci_runtime(self) -> None:
        """No OCI runtime: lxc-start sets the container up itself."""

    def prepare(self, image: WorkloadImage) -> None:
        """The rootfs in place, as for lxc; it must hold the inittab the init reads."""
        super().prepare(image)
        if not (image.rootfs_dir / INITTAB).is_file():
            raise BenchError(f"{image.rootfs_dir} has no {INITTAB}; rebuild the image")

    def _run(self, spec: StartSpec, config_path: Path, command: list[str]) -> Launched:
        """lxc-start: busybox init boots, then lxc-attach runs the container command."""
        boot = ControlFifo(spec.io_dir, BOOT_FIFO)
        argv = ["lxc-start", "-F", "-P", str(self.lxcpath), "-n", spec.name, "-f", str(config_path)]
        with undone_on_error(boot.close), (spec.io_dir / "lxc-start.log").open("wb") as log:
            launched_at = time.monotonic()
            # -F: the monitor stays bench's child (its exit is the container's end).
            monitor = spawn([*argv, "--", *init_argv()], log)
        self._monitors[spec.name] = monitor
        attach: list[subprocess.Popen[bytes]] = []
        kill = functools.partial(self._kill, spec.name, monitor)

        def remove() -> None:
            self._remove(spec.name, [monitor, *attach])

        def poll_exit() -> int | None:
            # The wrapper never exits on its own: lxc-attach ending means it died (its
            # status is the wrapper's), the monitor ending means the container did.
            for proc in (*attach, monitor):
                if proc.poll() is not None:
                    return proc.returncode
            return None

        attached = attached_command(command, lowered_rlimits(spec.rlimits))
        with undone_on_error(kill, remove, boot.close):
            booted_at = self._wait_booted(spec, monitor, boot)
            boot.close()
            with (spec.io_dir / "lxc-attach.log").open("wb") as log:
                user_argv = attach_argv(self.lxcpath, spec.name, spec.user)
                attach.append(spawn([*user_argv, "--", *attached], log))
            self._attached[spec.name] = attach[0]
            # After the attach, not before: lxc-info's own start-up (a process of about
            # 20 ms here) runs while the wrapper starts, not in front of it.
            pid = self._init_pid(spec, monitor, "lxc-start")
        return Launched(pid, kill, remove, poll_exit, boot_s=booted_at - launched_at)

    def _remove(self, name: str, procs: list[subprocess.Popen[bytes]]) -> None:
        """As lxc's, and forget its lxc-attach process too."""
        super()._remove(name, procs)
        self._attached.pop(name, None)

    def _wait_booted(
        self, spec: StartSpec, monitor: subprocess.Popen[bytes], boot: ControlFifo
    ) -> float:
        """time.monotonic() of the inittab's "B" line; BenchError when lxc-start ends first."""
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            booted_at = boot.wait_line(BOOT_LINE, 0.05)
            if booted_at is not None:
                return booted_at
            if monitor.poll() is not None:
                log_path = spec.io_dir / "lxc-start.log"
                raise exited_early("lxc-start", spec.name, monitor, log_path, "its init was up")
        raise BenchError(f"the init of {spec.name} was not up within {BOOT_TIMEOUT_S:.0f} s")

    def footprint_pids(self) -> list[int]:
        """The lxc-start monitors and the lxc-attach processes of the running containers."""
        return running_pids([*self._monitors.values(), *self._attached.values()])

    def _stale_bridges(self) -> list[str]:
        """None: lxc-system offers no bridge mode, and lxc's gc names the bridges of dead runs."""
        return []
