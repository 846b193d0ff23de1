"""Rootless podman: the podman CLI run by an unprivileged user, in a cgroup bench creates.

The user (`bench-rootless`, with subordinate ids) comes from scripts/setup-rootless.sh;
its podman keeps its own storage under the user's home. Rootless podman on cgroup v1
creates no cgroup (nor applies limits): each `podman run` starts inside a cgroup bench
creates, so conmon, the container and its network helpers (slirp4netns, rootlessport)
are measured there. On v2 bench delegates that cgroup to the user, and podman creates
the container's own cgroup below it with the limits, as a systemd user session would
let it. docs/runtimes.md, "Rootless podman", has the design. The user and its podman CLI,
the io dirs it can bind and the cgroups are in _rootless_user, _rootless_io and
_rootless_cgroup.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cgroups.locate import host_cgroup_version
from bench.cgroups.manage import FIX_ROOT, ManagedCgroup, cgroup_path, create_cgroup
from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes._container import (
    BUSYBOX,
    FIFO_NAME,
    IO_MOUNT,
    ContainerHandle,
    Launched,
    image_to_start,
    start_container,
    undone_on_error,
)
from bench.runtimes._network import LOOPBACK, inspect_addresses
from bench.runtimes._podman_service import INSTALL_FIX, bench_containers, bench_images
from bench.runtimes._rootless_cgroup import delegable_controllers, delegate_for, helpers_in
from bench.runtimes._rootless_io import IoDir, mounted_io_dirs, remove_stale, staging_dirs
from bench.runtimes._rootless_user import (
    SETUP_FIX,
    USER_NAME,
    Account,
    account,
    as_user,
    checked,
    ensure_pause_process,
    has_subids,
    host_ids,
    need_account,
    podman_argv,
    run_as,
    tail,
)
from bench.runtimes.base import Availability, Capabilities
from bench.spec import CPU_PERIOD_US, Limits

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

NETWORK_PUBLISHED = "slirp4netns"


class PodmanRootlessRuntime:
    """Runs workloads with rootless podman as user bench-rootless (implements Runtime)."""

    name = "podman-rootless"

    def __init__(self) -> None:
        self._image_ref: str | None = None
        self._running: dict[str, tuple[ManagedCgroup, int]] = {}

    # --- Runtime protocol -----------------------------------------------------------------

    def available(self) -> Availability:
        if shutil.which("podman") is None:
            return Availability(False, "the podman command is not installed", INSTALL_FIX)
        if os.geteuid() != 0:
            return Availability(False, "bench starts rootless podman as root", FIX_ROOT)
        if account() is None:
            return Availability(False, f"user {USER_NAME} does not exist", SETUP_FIX)
        if not (has_subids(Path("/etc/subuid")) and has_subids(Path("/etc/subgid"))):
            return Availability(
                False, f"{USER_NAME} has no subordinate ids in /etc/subuid, /etc/subgid", SETUP_FIX
            )
        if shutil.which("newuidmap") is None:
            return Availability(False, "newuidmap is not installed", "apt-get install uidmap")
        try:
            proc = as_user("info", "--format", "{{.Host.OCIRuntime.Name}}")
        except RuntimeUnavailable as exc:
            return Availability(False, str(exc), SETUP_FIX)
        if proc.returncode != 0:
            return Availability(False, f"rootless podman fails: {tail(proc)}", SETUP_FIX)
        return Availability(True)

    def version(self) -> str:
        info = json.loads(checked("info", "--format", "json"))
        host, store = info.get("host", {}), info.get("store", {})
        version = info.get("version", {}).get("Version", "?")
        # "slirp4netns version 1.2.0\ncommit: ...": the first line.
        slirp = str(host.get("slirp4netns", {}).get("version", "slirp4netns ?")).splitlines()[0]
        return (
            f"podman {version} rootless as {USER_NAME} (OCI runtime "
            f"{host.get('ociRuntime', {}).get('name', '?')}, storage "
            f"{store.get('graphDriverName', '?')}, cgroup {host.get('cgroupVersion', '?')}, "
            f"network {slirp}; {limits_note()})"
        )

    def default_oci_runtime(self) -> None:
        """No OCI axis: the user's podman runs one OCI runtime (runc on hybrid hosts)."""

    def prepare(self, image: WorkloadImage) -> None:
        """Import the rootfs tarball into the user's storage once (fed on stdin: the file
        may lie where the user cannot read)."""
        reference = f"localhost/{image.tag}"
        if as_user("image", "exists", reference).returncode != 0:
            with image.tarball.open("rb") as body:
                proc = as_user("import", "-", reference, stdin=body.fileno())
            if proc.returncode != 0:
                raise BenchError(f"rootless podman could not import {image.tarball}: {tail(proc)}")
        ensure_pause_process()
        self._image_ref = reference

    def start(self, spec: StartSpec) -> ContainerHandle:
        image_ref = image_to_start(spec, self.name, self._image_ref)
        refusal = _capabilities().limits_refusal(
            self.name, host_cgroup_version(), spec.limits.set_keys()
        )
        if refusal:
            raise BenchError(f"{spec.name}: {refusal}")
        user = need_account()
        ensure_pause_process()
        owner = host_ids(user, spec.user)
        io = IoDir(owner, user, spec.io_dir, spec.name)
        with undone_on_error(io.remove):
            return start_container(
                spec, lambda command: self._launch(user, owner, io, image_ref, spec, command)
            )

    def _launch(
        self,
        user: Account,
        owner: tuple[int, int],
        io: IoDir,
        image_ref: str,
        spec: StartSpec,
        command: list[str],
    ) -> Launched:
        os.chown(io.staging / FIFO_NAME, *owner)  # the wrapper writes to it
        managed = create_cgroup(spec.name, Limits())
        delegated = host_cgroup_version() == "v2"
        with undone_on_error(managed.remove):
            if delegated:
                delegate_for(managed, user, spec.limits)
        parent = cgroup_path(managed) if delegated else None
        argv = podman_argv(
            *run_args(spec, io.staging, parent), image_ref, *pinned(spec.limits, command)
        )

        def remove_container() -> None:
            as_user("rm", "--force", "--time", "0", spec.name)

        def remove() -> None:
            try:
                remove_container()
                # conmon's exit command (podman container cleanup) may still run there.
                managed.kill_all()
                managed.remove()
            finally:
                self._running.pop(spec.name, None)
                io.remove()

        with undone_on_error(remove):
            # The launching podman runs in the cgroup and exits once the container runs;
            # conmon, slirp4netns and rootlessport stay there with the container.
            done = run_as(user, argv, first_as_root=managed.join_current_process)
            if done.returncode != 0:
                raise BenchError(f"rootless podman could not start {spec.name}: {tail(done)}")
            attrs = json.loads(checked("inspect", "--type", "container", spec.name))[0]
            pid = int(attrs["State"]["Pid"])
            if pid <= 0:
                raise BenchError(f"rootless podman reports no pid for {spec.name}")
            _, published = inspect_addresses(attrs, spec, None)
        self._running[spec.name] = (managed, pid)

        def helper_pids() -> list[int]:
            return helpers_in(managed, pid)

        def kill() -> None:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)

        def poll_exit() -> int | None:
            if Path(f"/proc/{pid}").exists():
                return None
            return _exit_code(spec.name)

        # v1: bench's cgroup holds the container; v2: the container's own, from its pid.
        measured = None if delegated else managed.location
        return Launched(pid, kill, remove, poll_exit, None, published, helper_pids, measured)

    def footprint_pids(self) -> list[int]:
        """conmon, slirp4netns and rootlessport: every process of a running container's
        cgroup outside the container's own tree."""
        return sorted(
            {pid for managed, init in self._running.values() for pid in helpers_in(managed, init)}
        )

    def leftovers(self) -> list[str]:
        if account() is None or shutil.which("podman") is None:
            return []
        found = [f"podman-rootless container {name}" for name in _bench_containers()]
        found += [f"podman-rootless io copy {path}" for path in staging_dirs()]
        binds = mounted_io_dirs()
        found += [f"podman-rootless io bind of {name} on {path}" for name, path in binds]
        return found

    def remove_leftovers(self) -> int:
        """Containers in the user's storage, the binds over io dirs (their files copied
        back), the user's io copies, the images."""
        if account() is None or shutil.which("podman") is None:
            return 0
        removed = 0
        for name in _bench_containers():
            if as_user("rm", "--force", "--time", "0", name).returncode == 0:
                removed += 1
        removed += remove_stale()
        for ref in _bench_images():
            if as_user("rmi", "--force", ref).returncode == 0:
                removed += 1
        return removed

    def close(self) -> None:
        """Nothing to release: each handle's stop() removed its container."""


def run_args(spec: StartSpec, io_source: Path, cgroup_parent: str | None = None) -> list[str]:
    """`podman run` options of one container: the same container as rootful podman's.

    `cgroup_parent`: the delegated cgroup (v2) podman creates the container's cgroup in,
    with the limits.
    """
    args = [
        "run", "--detach", "--name", spec.name,
        *(f"--label={key}={value}" for key, value in spec.labels),
        "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        f"--volume={io_source}:{IO_MOUNT}", f"--workdir={IO_MOUNT}",
        # Explicit: podman's defaults (nofile 1048576) cannot be set without CAP_SYS_RESOURCE.
        *(f"--ulimit={name}={soft}:{hard}" for name, soft, hard in spec.rlimits),
    ]  # fmt: skip
    if cgroup_parent is not None:
        # Without it rootless podman creates no cgroup (libpod's isRootlessCgroupSet), and
        # without a cgroup of its own it applies no limit (a cpuset: see pinned()).
        args.append(f"--cgroup-parent={cgroup_parent}")
        args += limit_args(spec.limits)
    if spec.user is not None:
        args.append(f"--user={spec.user[0]}:{spec.user[1]}")
    if spec.network == "none":
        args.append("--network=none")
    else:
        # published: slirp4netns in user space; the host port on 127.0.0.1 is podman's pick.
        args.append(f"--network={NETWORK_PUBLISHED}")
        args += [f"--publish={LOOPBACK}::{port}" for port in spec.ports]
    return args


def limit_args(limits: Limits) -> list[str]:
    """The limits as `podman run` options: the values rootful podman's API call sets."""
    args: list[str] = []
    if limits.cpu_quota_us is not None:
        args += [f"--cpu-period={CPU_PERIOD_US}", f"--cpu-quota={limits.cpu_quota_us}"]
    if limits.cpuset is not None:
        args.append(f"--cpuset-cpus={limits.cpuset}")
    if limits.memory_bytes is not None:
        # Swap equal to memory: no swap (memory.swap.max 0).
        args += [f"--memory={limits.memory_bytes}", f"--memory-swap={limits.memory_bytes}"]
    if limits.pids is not None:
        args.append(f"--pids-limit={limits.pids}")
    return args


def limits_note() -> str:
    """Whether and how limits apply here (bench doctor): on v2, the controllers bench
    delegates to the user, found by delegating a probe cgroup."""
    refusal = _capabilities().limits_refusal(USER_NAME, host_cgroup_version(), ["cpus"])
    user = account()
    if refusal or user is None:
        return f"no limits on cgroup {host_cgroup_version()}"
    try:
        controllers = delegable_controllers(user)
    except BenchError as exc:
        return f"no limits: {exc}"
    return (
        f"limits through a cgroup v2 delegated to {USER_NAME} "
        f"(controllers {' '.join(controllers) or 'none'})"
    )


def _capabilities() -> Capabilities:
    from bench.runtimes import registry

    return registry.entry(PodmanRootlessRuntime.name).capabilities


def pinned(limits: Limits, command: list[str]) -> list[str]:
    """The container command under busybox's taskset where podman cannot apply the cpuset
    itself: the container's processes get the CPUs, its network helpers stay unpinned
    (as docker-proxy and rootful conmon are)."""
    if limits.cpuset is None or host_cgroup_version() in _capabilities().limits_on:
        return command
    return [BUSYBOX, "taskset", "-c", limits.cpuset, *command]


def _exit_code(name: str) -> int:
    proc = as_user("inspect", "--type", "container", "--format", "{{.State.ExitCode}}", name)
    try:
        return int(proc.stdout.strip())
    except ValueError:
        return 137  # gone: removed or killed with the cgroup


def _bench_containers() -> list[str]:
    return bench_containers(checked)


def _bench_images() -> list[str]:
    return bench_images(checked)
