"""LXC application containers (`lxc-execute`) driven through the lxc-* command-line tools.

Why the tools and not the Python binding (PyPI `lxc`): the tools ship with Debian's lxc
package and need nothing else, while the binding must be compiled against lxc-dev for
every Python; a trial runs only three commands (lxc-execute, lxc-info, lxc-stop), and
lxc-execute's own start-up is part of what LXC costs, so it belongs in start latency.
Containers live in a private lxcpath, so bench never touches the host's own containers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench.cgroups.locate import cgroup_mounts, host_cgroup_version
from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes._container import (
    IO_MOUNT,
    ContainerHandle,
    Launched,
    prepared_to_start,
    rootfs_in_place,
    start_container,
    undone_on_error,
)
from bench.runtimes._lxc_bridge import Bridge, create_bridge, ports_of, remove_bridge, stale_bridges
from bench.runtimes._process import exited_early, running_pids, spawn
from bench.runtimes.base import Availability
from bench.spec import CPU_PERIOD_US, NAME_PREFIX, StartSpec

if TYPE_CHECKING:
    from ipaddress import IPv4Interface

    from bench.image import WorkloadImage

TOOLS = ("lxc-execute", "lxc-info", "lxc-stop", "lxc-ls")
INSTALL_FIX = "apt-get install lxc"
LOG_FILE = "lxc-execute.log"
CONFIG_SUFFIX = ".conf"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
PID_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
TOOL_TIMEOUT_S = 30.0
# lxc-init and the wrapper need no capability (test_container_contract.py runs the cpu
# and vm stressors with none), so drop all, as docker and podman do with --cap-drop ALL.
CAP_KEEP = "none"


def default_lxcpath() -> Path:
    """/var/lib/bench-lxc for root, else a per-user directory under /tmp."""
    if os.geteuid() == 0:
        return Path("/var/lib/bench-lxc")
    return Path(f"/tmp/bench-lxc-{os.geteuid()}")


def _tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, check=False, timeout=TOOL_TIMEOUT_S
    )


def _config_value(value: str) -> str:
    """A value safe on one line of an LXC config (a newline would inject a new key)."""
    if "\n" in value or "\r" in value:
        raise BenchError(f"{value!r} cannot go into an LXC config: it contains a newline")
    return value


def _fstab_path(path: Path) -> str:
    """A path as a field of lxc.mount.entry (fstab(5) syntax: spaces as \\040)."""
    return _config_value(str(path)).replace("\\", "\\134").replace(" ", "\\040")


def limit_lines(spec: StartSpec, cgroup_version: str, memsw_supported: bool) -> list[str]:
    """lxc.cgroup(2).* lines for the shared limits (v1 keys on v1 and hybrid hosts)."""
    limits = spec.limits
    lines: list[str] = []
    if cgroup_version == "v2":
        if limits.cpu_quota_us is not None:
            lines.append(f"lxc.cgroup2.cpu.max = {limits.cpu_quota_us} {CPU_PERIOD_US}")
        if limits.cpuset is not None:
            lines.append(f"lxc.cgroup2.cpuset.cpus = {_config_value(limits.cpuset)}")
        if limits.memory_bytes is not None:
            lines.append(f"lxc.cgroup2.memory.max = {limits.memory_bytes}")
            lines.append("lxc.cgroup2.memory.swap.max = 0")
        if limits.pids is not None:
            lines.append(f"lxc.cgroup2.pids.max = {limits.pids}")
        return lines
    if limits.cpu_quota_us is not None:
        lines.append(f"lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_US}")
        lines.append(f"lxc.cgroup.cpu.cfs_quota_us = {limits.cpu_quota_us}")
    if limits.cpuset is not None:
        lines.append(f"lxc.cgroup.cpuset.cpus = {_config_value(limits.cpuset)}")
    if limits.memory_bytes is not None:
        # memory before memsw: the kernel refuses memsw below the memory limit.
        lines.append(f"lxc.cgroup.memory.limit_in_bytes = {limits.memory_bytes}")
        if memsw_supported:
            lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = {limits.memory_bytes}")
    if limits.pids is not None:
        lines.append(f"lxc.cgroup.pids.max = {limits.pids}")
    return lines


def network_lines(
    spec: StartSpec, bridge: str | None = None, address: IPv4Interface | None = None
) -> list[str]:
    """lxc.net.0.* lines for the spec's network mode (bridge mode: the bridge and the
    container's static address on it, with no gateway, so nothing beyond the bridge)."""
    if spec.network == "host":
        return ["lxc.net.0.type = none"]
    if spec.network == "bridge":
        if bridge is None or address is None:
            raise BenchError(f"{spec.name}: network mode bridge needs the run's bridge")
        return [
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {_config_value(bridge)}",
            "lxc.net.0.name = eth0",
            f"lxc.net.0.ipv4.address = {address}",
            "lxc.net.0.flags = up",
        ]
    if spec.network != "none":
        raise BenchError(f"lxc does not support network mode {spec.network!r}")
    # "empty" leaves lo down: loopback stressors (sock, udp) would fail to connect and
    # still "succeed"; docker's and podman's --network none bring lo up.
    return ["lxc.net.0.type = empty", "lxc.net.0.flags = up"]


def memsw_supported() -> bool:
    """Whether the host's v1 memory controller limits memory+swap (not with swapaccount=0)."""
    memory_dir = cgroup_mounts().get("memory")
    return memory_dir is not None and (memory_dir / "memory.memsw.limit_in_bytes").exists()


def container_config(
    spec: StartSpec,
    rootfs: Path,
    cgroup_version: str,
    memsw: bool,
    bridge: str | None = None,
    address: IPv4Interface | None = None,
    *,
    init_as_user: bool = True,
) -> str:
    """The whole LXC config of one container (`memsw`: memsw_supported()).

    `init_as_user`: the init runs as the spec's user (an application container, whose init
    runs the workload); a system container's init stays root and lxc-attach sets the user.
    """
    net = network_lines(spec, bridge, address)
    lines = [
        f"lxc.uts.name = {_config_value(spec.name)}",
        f"lxc.rootfs.path = dir:{_config_value(str(rootfs))}",
        "lxc.rootfs.options = ro",
        *net,
        f"lxc.mount.entry = {_fstab_path(spec.io_dir)} {IO_MOUNT.lstrip('/')} none "
        "rw,bind,create=dir 0 0",
        "lxc.mount.auto = proc:mixed sys:ro cgroup:mixed",
        "lxc.autodev = 1",
        # The distro's generated AppArmor profile denies the bind mounts above; docker and
        # podman run their containers under their own profiles, LXC here under none.
        "lxc.apparmor.profile = unconfined",
        f"lxc.init.cwd = {IO_MOUNT}",
        "lxc.no_new_privs = 1",
        *(
            [f"lxc.init.uid = {spec.user[0]}", f"lxc.init.gid = {spec.user[1]}"]
            if spec.user and init_as_user
            else []
        ),
        f"lxc.cap.keep = {CAP_KEEP}",
        *(f"lxc.prlimit.{name} = {soft}:{hard}" for name, soft, hard in spec.rlimits),
        *limit_lines(spec, cgroup_version, memsw),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class LxcRuntime:
    """Runs workloads with lxc-execute in a private lxcpath (implements Runtime)."""

    tools: ClassVar[tuple[str, ...]] = TOOLS
    init_as_user: ClassVar[bool] = True
    lxcpath: Path = field(default_factory=default_lxcpath)
    name: str = "lxc"
    _rootfs: Path | None = field(default=None, init=False, repr=False)
    _monitors: dict[str, subprocess.Popen[bytes]] = field(
        default_factory=dict, init=False, repr=False
    )
    _bridge: Bridge | None = field(default=None, init=False, repr=False)

    def available(self) -> Availability:
        missing = [tool for tool in self.tools if shutil.which(tool) is None]
        if missing:
            return Availability(False, f"{', '.join(missing)} not installed", INSTALL_FIX)
        if os.geteuid() != 0:
            return Availability(
                False,
                "lxc application containers with host cgroup limits need root here",
                "run bench as root (sudo)",
            )
        # Only check: creating the lxcpath here would leave an empty directory behind.
        existing = next(p for p in (self.lxcpath, *self.lxcpath.parents) if p.exists())
        if not os.access(existing, os.W_OK):
            return Availability(
                False, f"cannot create {self.lxcpath}: {existing} is not writable", ""
            )
        return Availability(True)

    def version(self) -> str:
        if shutil.which(self.tools[0]) is None:
            raise RuntimeUnavailable(f"{self.tools[0]} is not installed; fix: {INSTALL_FIX}")
        proc = _tool(self.tools[0], "--version")
        return f"lxc {proc.stdout.strip() or '?'}"

    def default_oci_runtime(self) -> None:
        """No OCI runtime: lxc-execute sets the container up itself."""

    def prepare(self, image: WorkloadImage) -> None:
        """LXC runs the image's rootfs directory in place, mounted read-only."""
        self._rootfs = rootfs_in_place(image)

    def start(self, spec: StartSpec) -> ContainerHandle:
        rule = "use only letters, digits, '_', '.' and '-'"
        rootfs = prepared_to_start(spec, self.name, self._rootfs, _SAFE_NAME, rule)
        address = None
        if spec.network == "bridge":
            if self._bridge is None:
                self._bridge = create_bridge()
            address = self._bridge.lease()
        bridge = self._bridge.name if self._bridge is not None else None
        try:
            config = container_config(
                spec,
                rootfs,
                host_cgroup_version(),
                memsw_supported(),
                bridge,
                address,
                init_as_user=self.init_as_user,
            )
            return start_container(
                spec, lambda command: self._launch(spec, config, command, address)
            )
        except BaseException:
            if address is not None and self._bridge is not None:
                self._bridge.release(address)
            raise

    def _write_config(self, spec: StartSpec, config: str) -> Path:
        config_path = self.lxcpath / f"{spec.name}{CONFIG_SUFFIX}"
        for attempt in range(2):
            self.lxcpath.mkdir(parents=True, exist_ok=True)
            try:
                config_path.write_text(config)
                break
            except FileNotFoundError:
                # Another bench process's close() removed the empty lxcpath in between.
                if attempt:
                    raise
        return config_path

    def _launch(
        self,
        spec: StartSpec,
        config: str,
        command: list[str],
        address: IPv4Interface | None = None,
    ) -> Launched:
        """Write the container's config and start it (`_run`: each kind's own start); its
        address on the run's bridge is released once the container is removed."""
        launched = self._run(spec, self._write_config(spec, config), command)
        bridge = self._bridge
        if address is None or bridge is None:
            return launched

        def remove() -> None:
            try:
                launched.remove()
            finally:
                bridge.release(address)

        return dataclasses.replace(launched, remove=remove, address=str(address.ip))

    def _run(self, spec: StartSpec, config_path: Path, command: list[str]) -> Launched:
        """lxc-execute: the container command is the container's init."""
        argv = ["lxc-execute", "-P", str(self.lxcpath), "-n", spec.name, "-f", str(config_path)]
        with (spec.io_dir / LOG_FILE).open("wb") as log:
            monitor = spawn([*argv, "--", *command], log)
        self._monitors[spec.name] = monitor
        kill = functools.partial(self._kill, spec.name, monitor)
        remove = functools.partial(self._remove, spec.name, [monitor])
        with undone_on_error(kill, remove):
            pid = self._init_pid(spec, monitor, "lxc-execute")
        return Launched(pid, kill, remove, monitor.poll)

    def _kill(self, name: str, monitor: subprocess.Popen[bytes]) -> None:
        """Stop the container while its monitor runs (-k: its init is killed)."""
        if monitor.poll() is None:
            _tool("lxc-stop", "-P", str(self.lxcpath), "-n", name, "-k")

    def _remove(self, name: str, procs: list[subprocess.Popen[bytes]]) -> None:
        """Wait for the container's processes to end (killed past STOP_TIMEOUT_S), then
        forget it and remove its lxcpath entry."""
        for proc in procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()  # the container's init dies with its monitor
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._monitors.pop(name, None)
        _remove_entry(self.lxcpath, name)

    def _init_pid(self, spec: StartSpec, monitor: subprocess.Popen[bytes], tool: str) -> int:
        """The container's init pid on the host, polled until lxc-info has it."""
        deadline = time.monotonic() + PID_TIMEOUT_S
        while time.monotonic() < deadline:
            proc = _tool("lxc-info", "-P", str(self.lxcpath), "-n", spec.name, "-p", "-H")
            if proc.returncode == 0 and proc.stdout.strip().isdigit():
                return int(proc.stdout.strip())
            if monitor.poll() is not None:
                log_path = spec.io_dir / f"{tool}.log"
                raise exited_early(tool, spec.name, monitor, log_path, "its container ran")
            time.sleep(0.01)
        raise BenchError(f"lxc-info found no init pid for {spec.name} in {PID_TIMEOUT_S:.0f} s")

    def footprint_pids(self) -> list[int]:
        """The lxc-execute monitor processes of the running containers."""
        return running_pids(self._monitors.values())

    def leftovers(self) -> list[str]:
        running = self._running()
        found = [f"lxc container {name}" for name in running]
        found += [f"lxc entry {path}" for path in self._entries() if path.name not in running]
        for bridge in self._stale_bridges():
            found.append(f"lxc bridge {bridge}")
            found += [f"lxc veth {veth} on {bridge}" for veth in ports_of(bridge)]
        return found

    def remove_leftovers(self) -> int:
        removed = 0
        for name in self._running():
            if _tool("lxc-stop", "-P", str(self.lxcpath), "-n", name, "-k").returncode == 0:
                removed += 1
        for path in self._entries():
            _remove_path(path)
            removed += 1
        for bridge in self._stale_bridges():  # its veths went with the containers stopped above
            remove_bridge(bridge)
            removed += 1
        with contextlib.suppress(OSError):
            self.lxcpath.rmdir()  # only when empty
        return removed

    def close(self) -> None:
        """Remove the run's bridge and the lxcpath when empty; each handle's stop() already
        ended its monitor."""
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            remove_bridge(bridge.name)
        with contextlib.suppress(OSError):
            self.lxcpath.rmdir()  # fails, harmlessly, while anything is still in it

    def _stale_bridges(self) -> list[str]:
        """Bridges of dead bench runs, with their veths."""
        return stale_bridges()

    def _running(self) -> list[str]:
        if not self.lxcpath.is_dir() or shutil.which("lxc-ls") is None:
            return []
        proc = _tool("lxc-ls", "-P", str(self.lxcpath), "-1", "--active")
        return sorted(n for n in proc.stdout.split() if n.startswith(NAME_PREFIX))

    def _entries(self) -> list[Path]:
        """Configs and per-container directories bench left in its lxcpath."""
        if not self.lxcpath.is_dir():
            return []
        return sorted(p for p in self.lxcpath.iterdir() if p.name.startswith(NAME_PREFIX))


def _remove_entry(lxcpath: Path, name: str) -> None:
    for path in (lxcpath / f"{name}{CONFIG_SUFFIX}", lxcpath / name):
        _remove_path(path)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
