"""LXD system containers through LXD's client `lxc`: boot busybox init, exec the workload.

The LXD counterpart of lxc-system (bench/runtimes/lxc_system.py): `lxc launch` creates the
container from the workload image and boots the image's busybox init, whose inittab writes
"B" to a FIFO in the io dir (the boot time); `lxc exec` then starts the wrapper inside.
LXD drives the same liblxc, so the limits are lxc's own config lines, passed as raw.lxc.
The daemon is the host's (scripts/start-services.sh starts one without systemd); bench
brings its own storage pool and no network or profile. See docs/runtimes.md, "LXD".
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cgroups.locate import host_cgroup_version
from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes._container import (
    IO_MOUNT,
    ContainerHandle,
    ControlFifo,
    Launched,
    prepared_to_start,
    start_container,
    undone_on_error,
)
from bench.runtimes._process import spawn
from bench.runtimes.base import Availability
from bench.runtimes.lxc import _config_value, limit_lines, memsw_supported
from bench.runtimes.lxc_system import (
    BOOT_FIFO,
    BOOT_LINE,
    BOOT_TIMEOUT_S,
    INITTAB,
    attached_command,
    init_argv,
)
from bench.spec import NAME_PREFIX, StartSpec

if TYPE_CHECKING:
    from bench.image import WorkloadImage

# LXD's client. LXC's own tools are the lxc-* commands; Debian ships this one in lxd-client.
CLIENT = "lxc"
DAEMON = "lxd"
INSTALL_FIX = "apt-get install lxd"
START_FIX = "bash scripts/start-services.sh (starts the LXD daemon; no systemd needed)"
# bench's own storage pool (dir driver), created on first use and kept, as the imported
# image is, for the next run; `bench gc` removes both. Nothing of the host's LXD setup
# (`lxd init`: its pool, bridge, default profile) is used.
POOL = "bench-lxd"
IMAGE_ALIAS_PREFIX = "bench-workload-"
# LXD refuses an image whose metadata has no creation date, and reads 0 as none.
IMAGE_CREATION_DATE = 1
EXEC_LOG = "lxc-exec.log"
CLIENT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# An LXD instance name is a host name: letters, digits and '-', at most 63 characters.
_INSTANCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
# Capabilities 0..40 by liblxc's names, all dropped (lxc-system's lxc.cap.keep = none,
# which LXD refuses beside the lxc.cap.drop lines it writes itself); cut to the kernel's.
CAPABILITIES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
    "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
    "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
    "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip


def client(
    *args: str, stdin: str | None = None, timeout_s: float = CLIENT_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """One call of LXD's client; never raises on its exit status."""
    return subprocess.run(
        [CLIENT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )


def query(path: str) -> Any:
    """GET `path` of LXD's REST API through the client; BenchError when it fails."""
    proc = client("query", path)
    if proc.returncode != 0:
        raise BenchError(f"LXD query {path} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def dropped_capabilities() -> list[str]:
    """Every capability the running kernel has (liblxc refuses names it does not know)."""
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return list(CAPABILITIES)
    return list(CAPABILITIES[: last + 1])


def raw_lxc(spec: StartSpec, cgroup_version: str, memsw: bool) -> str:
    """The liblxc lines LXD appends to its own config of the container (`raw.lxc`).

    As lxc-system's: busybox init, read-only rootfs, no capability, no new privileges, the
    shared limits as cgroup lines. LXD refuses lxc.net.* lines, so loopback (down in the
    container's own network namespace) is brought up by a start-host hook from the host.
    """
    nsenter, ip = shutil.which("nsenter"), shutil.which("ip")
    if nsenter is None or ip is None:
        raise BenchError("LXD containers need nsenter and ip on the host (util-linux, iproute2)")
    lines = [
        f"lxc.init.cmd = {' '.join(init_argv())}",
        "lxc.rootfs.options = ro",
        f"lxc.cap.drop = {' '.join(dropped_capabilities())}",
        "lxc.no_new_privs = 1",
        # A hook runs through sh -c with LXC_PID set to the container's init.
        f"lxc.hook.start-host = {_config_value(nsenter)} --target $LXC_PID --net "
        f"{_config_value(ip)} link set lo up",
        *limit_lines(spec, cgroup_version, memsw),
    ]
    return "\n".join(lines) + "\n"


def instance_config(spec: StartSpec, raw: str, pool: str = POOL) -> dict[str, Any]:
    """What `lxc launch` reads on stdin: config keys and devices, no profile.

    Privileged, as lxc-system's containers (root's LXC, no user namespace): an unprivileged
    one would need the rootfs shifted to its uid range on every create, and could not
    write to the io dir. No nic device: the container's network namespace holds lo only.
    """
    if spec.network != "none":
        raise BenchError(f"lxd does not support network mode {spec.network!r}")
    return {
        "config": {"security.privileged": "true", "raw.lxc": raw},
        "devices": {
            "root": {"type": "disk", "path": "/", "pool": pool},
            "bench": {"type": "disk", "source": str(Path(spec.io_dir).resolve()), "path": IO_MOUNT},
        },
    }


def exec_argv(name: str, user: tuple[int, int] | None) -> list[str]:
    """`lxc exec` up to its `--`: no terminal, the scenario's user when it has one."""
    argv = [CLIENT, "exec", name, "--mode", "non-interactive"]
    if user is not None:
        argv += ["--user", str(user[0]), "--group", str(user[1])]
    return argv


def image_alias(image: WorkloadImage) -> str:
    return f"{IMAGE_ALIAS_PREFIX}{image.version_tag}"


def metadata_tarball() -> bytes:
    """The image's metadata part: metadata.yaml only, the same bytes on every host."""
    text = f"architecture: {os.uname().machine}\ncreation_date: {IMAGE_CREATION_DATE}\n"
    text += "properties:\n  description: bench workload image\n"
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("metadata.yaml")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def delete_instance(name: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Delete container `name`, retried while LXD is still busy with it; False when it was
    not there. After a failed start LXD runs its stop operation for a few seconds, and
    refuses a delete meanwhile ("Instance is busy running a stop operation")."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = client("delete", name, "--force")
        if done.returncode == 0:
            return True
        if "not found" in done.stderr:
            return False
        if time.monotonic() > deadline:
            raise BenchError(f"LXD did not delete {name}: {done.stderr.strip()[-500:]}")
        time.sleep(0.2)


def daemon_pid() -> int | None:
    """The LXD daemon's pid, from its own answer; None when it does not answer."""
    try:
        pid = query("/1.0")["environment"]["server_pid"]
    except (BenchError, KeyError, ValueError, subprocess.TimeoutExpired):
        return None
    return int(pid)


@dataclass
class LxdRuntime:
    """LXD system containers (implements Runtime; capabilities in the registry)."""

    name: str = "lxd"
    pool: str = POOL
    _alias: str | None = field(default=None, init=False, repr=False)
    _execs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False, repr=False)

    def available(self) -> Availability:
        missing = [tool for tool in (CLIENT, DAEMON) if shutil.which(tool) is None]
        if missing:
            return Availability(False, f"{', '.join(missing)} not installed", INSTALL_FIX)
        if os.geteuid() != 0:
            return Availability(
                False, "LXD containers with host cgroup limits need root here", "run as root"
            )
        try:
            proc = client("query", "/1.0", timeout_s=10)
        except subprocess.TimeoutExpired:
            return Availability(False, "the LXD daemon did not answer within 10 s", START_FIX)
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            return Availability(False, f"the LXD daemon does not answer: {why[0]}", START_FIX)
        return Availability(True)

    def version(self) -> str:
        if shutil.which(CLIENT) is None:
            raise RuntimeUnavailable(f"LXD's client {CLIENT} is not installed; fix: {INSTALL_FIX}")
        try:
            env = query("/1.0")["environment"]
        except BenchError as exc:
            raise RuntimeUnavailable(f"{exc}; fix: {START_FIX}") from exc
        return (
            f"lxd {env.get('server_version', '?')} ({env.get('driver', '?')} "
            f"{env.get('driver_version', '?')}, storage dir)"
        )

    def default_oci_runtime(self) -> None:
        """No OCI runtime: LXD sets the container up through liblxc."""

    def prepare(self, image: WorkloadImage) -> None:
        """bench's storage pool and the image (metadata + the image tarball as its rootfs)."""
        if not (image.rootfs_dir / INITTAB).is_file():
            raise BenchError(f"{image.rootfs_dir} has no {INITTAB}; rebuild the image")
        if client("storage", "show", self.pool).returncode != 0:
            made = client("storage", "create", self.pool, "dir")
            # Another bench process may have created it in between.
            if made.returncode != 0 and client("storage", "show", self.pool).returncode != 0:
                raise BenchError(f"LXD could not create pool {self.pool}: {made.stderr.strip()}")
        alias = image_alias(image)
        if client("image", "show", alias).returncode != 0:
            with tempfile.TemporaryDirectory(prefix="bench-lxd-") as tmp:
                meta = Path(tmp) / "metadata.tar"
                meta.write_bytes(metadata_tarball())
                done = client("image", "import", str(meta), str(image.tarball), "--alias", alias)
            if done.returncode != 0 and client("image", "show", alias).returncode != 0:
                raise BenchError(
                    f"LXD could not import {image.tarball} as {alias}: {done.stderr.strip()}"
                )
        self._alias = alias

    def start(self, spec: StartSpec) -> ContainerHandle:
        rule = "be a host name for LXD (letters, digits and '-', at most 63 characters)"
        alias = prepared_to_start(spec, self.name, self._alias, _INSTANCE_NAME, rule)
        raw = raw_lxc(spec, host_cgroup_version(), memsw_supported())
        config = json.dumps(instance_config(spec, raw, self.pool))
        return start_container(spec, lambda command: self._launch(spec, alias, config, command))

    def _launch(self, spec: StartSpec, alias: str, config: str, command: list[str]) -> Launched:
        name = spec.name
        boot = ControlFifo(spec.io_dir, BOOT_FIFO)
        execs: list[subprocess.Popen[bytes]] = []

        def kill() -> None:
            client("stop", name, "--force")  # fails harmlessly when already stopped or gone

        def remove() -> None:
            for proc in execs:
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT_S)
            self._execs.pop(name, None)
            delete_instance(name)

        def poll_exit() -> int | None:
            # The wrapper never exits on its own: `lxc exec` ending means the wrapper died
            # or the container stopped.
            return execs[0].poll() if execs else None

        with undone_on_error(kill, remove, boot.close):
            launched_at = time.monotonic()
            # One client call creates the container (the dir driver unpacks the image into
            # it) and boots it; it returns once the init runs.
            done = client("launch", alias, name, "--no-profiles", stdin=config)
            if done.returncode != 0:
                raise BenchError(
                    f"lxc launch of {name} failed: {done.stderr.strip()[-800:] or 'no output'}"
                )
            booted_at = boot.wait_line(BOOT_LINE, BOOT_TIMEOUT_S)
            if booted_at is None:
                raise BenchError(f"the init of {name} was not up within {BOOT_TIMEOUT_S:.0f} s")
            boot.close()
            attached = attached_command(command, _all_rlimits(spec))
            with (spec.io_dir / EXEC_LOG).open("wb") as log:
                execs.append(spawn([*exec_argv(name, spec.user), "--", *attached], log))
            self._execs[name] = execs[0]
            pid = int(query(f"/1.0/instances/{name}/state")["pid"])
            if pid <= 0:
                raise BenchError(f"LXD reports no init pid for {name}")
        return Launched(pid, kill, remove, poll_exit, boot_s=booted_at - launched_at)

    def footprint_pids(self) -> list[int]:
        """The daemon, and per running container its liblxc monitor and `lxc exec` client
        and the daemon's forkexec child; all outside the container's cgroup."""
        import psutil

        names = {name for name, proc in self._execs.items() if proc.poll() is None}
        found = {proc.pid for proc in self._execs.values() if proc.poll() is None}
        for process in psutil.process_iter(["cmdline"]):
            args = process.info["cmdline"] or []
            if not names or not args:
                continue
            monitor = args[0].startswith("[lxc monitor]") and args[-1] in names
            forkexec = args[1:2] == ["forkexec"] and any(name in args for name in names)
            if monitor or forkexec:
                found.add(process.pid)
        daemon = daemon_pid()
        if daemon is not None and (found or self._execs):
            found.add(daemon)
        return sorted(found)

    def leftovers(self) -> list[str]:
        return [f"lxd container {name}" for name in self._instances()]

    def remove_leftovers(self) -> int:
        """Containers first, then the images bench imported and its pool (caches that a
        run keeps, as docker's image)."""
        if not self._answers():
            return 0
        removed = 0
        for name in self._instances():
            if delete_instance(name):
                removed += 1
        for fingerprint in self._images():
            if client("image", "delete", fingerprint).returncode == 0:
                removed += 1
        pool_there = client("storage", "show", self.pool).returncode == 0
        if pool_there and client("storage", "delete", self.pool).returncode == 0:
            removed += 1
        return removed

    def close(self) -> None:
        """Nothing of the run's own: each handle's stop() deleted its container."""

    def _answers(self) -> bool:
        return shutil.which(CLIENT) is not None and daemon_pid() is not None

    def _instances(self) -> list[str]:
        if not self._answers():
            return []
        proc = client("list", "--format", "csv", "--columns", "n")
        return sorted(n for n in proc.stdout.split() if n.startswith(NAME_PREFIX))

    def _images(self) -> list[str]:
        """Fingerprints of the images bench imported (found by their alias)."""
        try:
            images = query("/1.0/images?recursion=1")
        except BenchError:
            return []
        return sorted(
            image["fingerprint"]
            for image in images
            if any(a["name"].startswith(IMAGE_ALIAS_PREFIX) for a in image.get("aliases") or [])
        )


def _all_rlimits(spec: StartSpec) -> list[tuple[int, int, int]]:
    """Every rlimit of the spec, set in the container: an exec'd process inherits the LXD
    daemon's limits, not bench's (lxc-system lowers only those that differ from bench's)."""
    from bench.runtimes.bare import _RLIMITS

    calls = []
    for name, soft, hard in spec.rlimits:
        which = _RLIMITS.get(name)
        if which is None:
            raise BenchError(f"unknown rlimit {name!r}; bench sets only {', '.join(_RLIMITS)}")
        calls.append((which, soft, hard))
    return calls
