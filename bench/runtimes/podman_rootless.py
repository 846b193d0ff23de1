"""Rootless podman: the podman CLI run by an unprivileged user, in a cgroup bench creates.

The user (`bench-rootless`, with subordinate ids) comes from scripts/setup-rootless.sh;
its podman keeps its own storage under the user's home. Rootless podman on cgroup v1
creates no cgroup (nor applies limits): each `podman run` starts inside a cgroup bench
creates, so conmon, the container and its network helpers (slirp4netns, rootlessport)
are measured there. On v2 bench delegates that cgroup to the user, and podman creates
the container's own cgroup below it with the limits, as a systemd user session would
let it. docs/runtimes.md, "Rootless podman", has the design.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cgroups.locate import host_cgroup_version
from bench.cgroups.manage import FIX_ROOT, ManagedCgroup, cgroup_path, create_cgroup, delegate
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
from bench.runtimes._podman_service import (
    INSTALL_FIX,
    bench_containers,
    bench_images,
    default_oci_runtime,
)
from bench.runtimes.base import Availability, Capabilities
from bench.spec import CPU_PERIOD_US, NAME_PREFIX, Limits

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

USER_NAME = "bench-rootless"
SETUP_FIX = "run `bash scripts/setup-rootless.sh` as root (creates the user, its subordinate ids)"
# Its XDG_RUNTIME_DIR: without logind nothing makes /run/user/<uid>, so bench does (0700).
RUNTIME_DIR = Path("/run/bench-rootless")
# Per-container io dirs the user can reach (results may lie below a 0700 directory such as
# /root); bench bind-mounts each over the trial's io dir for its own reads (see _IoDir).
IO_SUBDIR = "io"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Native overlay (kernel 5.13+ allows it in a user namespace); vfs would copy the 130 MB
# image into every container.
STORAGE_DRIVER = "overlay"
NETWORK_PUBLISHED = "slirp4netns"
CLI_TIMEOUT_S = 120.0
# v2: the child of the delegated cgroup that `podman run` starts in (its conmon, slirp4netns
# and rootlessport stay there); the container's cgroup, libpod-<id>, is its sibling.
LAUNCH_LEAF = "launch"
# The v2 controller each limit needs delegated.
LIMIT_CONTROLLERS = {"cpus": "cpu", "cpuset": "cpuset", "memory_bytes": "memory", "pids": "pids"}
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Account:
    """The unprivileged user's ids and home."""

    uid: int
    gid: int
    home: Path


def account() -> Account | None:
    try:
        entry = pwd.getpwnam(USER_NAME)
    except KeyError:
        return None
    return Account(entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def _subids_of(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return any(line.startswith(f"{USER_NAME}:") for line in path.read_text().splitlines())
    return False


def host_ids(user: Account, inside: tuple[int, int] | None) -> tuple[int, int]:
    """The host uid and gid that the container's `inside` ids are: root inside is the user,
    id n >= 1 is the n-th of its subordinate ids (podman's rootless mapping)."""
    if inside is None:
        return user.uid, user.gid
    uid, gid = inside
    return (
        user.uid if uid == 0 else _subordinate(Path("/etc/subuid"), uid),
        user.gid if gid == 0 else _subordinate(Path("/etc/subgid"), gid),
    )


def _subordinate(path: Path, inside: int) -> int:
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        if name == USER_NAME and inside <= int(count):
            return int(start) + inside - 1
    raise BenchError(
        f"id {inside} has no subordinate id of {USER_NAME} in {path}; fix: {SETUP_FIX}"
    )


def _oci_runtime() -> str:
    """runc on hybrid hosts (crun refuses them), else podman's default: as rootful podman."""
    return default_oci_runtime()


def podman_argv(*args: str) -> list[str]:
    """The user's podman with the global options bench always gives it."""
    return [
        "podman",
        "--cgroup-manager", "cgroupfs",  # no systemd user session to ask for scopes
        "--events-backend", "file",  # nor a journal
        "--storage-driver", STORAGE_DRIVER,
        "--runtime", _oci_runtime(),
        *args,
    ]  # fmt: skip


def user_env(user: Account) -> dict[str, str]:
    """The whole environment of the user's podman: nothing of root's leaks in."""
    return {
        "HOME": str(user.home),
        "USER": USER_NAME,
        "LOGNAME": USER_NAME,
        "PATH": PATH,
        "XDG_RUNTIME_DIR": str(RUNTIME_DIR),
        "LANG": "C.UTF-8",
    }


def _need_account() -> Account:
    user = account()
    if user is None:
        raise RuntimeUnavailable(f"user {USER_NAME} does not exist; fix: {SETUP_FIX}")
    RUNTIME_DIR.mkdir(mode=0o700, exist_ok=True)
    os.chown(RUNTIME_DIR, user.uid, user.gid)
    return user


def as_user(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the user's podman with `args` (setresuid in the child, no supplementary groups)."""
    user = _need_account()
    return subprocess.run(
        podman_argv(*args),
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user_env(user),
        cwd=user.home,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=CLI_TIMEOUT_S,
    )


def _checked(*args: str) -> str:
    proc = as_user(*args)
    if proc.returncode != 0:
        raise BenchError(f"`podman {' '.join(args)}` as {USER_NAME} failed: {_tail(proc)}")
    return proc.stdout


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if "is not a shared mount" not in line]
    return "\n".join(lines).strip()[-800:] or f"exit status {proc.returncode}"


def _ensure_pause_process() -> None:
    """Start the user's pause process outside any trial's cgroup.

    Rootless podman keeps its user namespace alive in a pause process that the first
    podman command starts; started from a trial's cgroup it would stay there, counted in
    the trial and killed at its stop.
    """
    pid_file = RUNTIME_DIR / "libpod" / "tmp" / "pause.pid"
    with contextlib.suppress(OSError, ValueError):
        if Path(f"/proc/{int(pid_file.read_text())}").exists():
            return
    _checked("unshare", "/bin/true")


class _IoDir:
    """The trial's io dir as the user's podman can bind it.

    The io dir may lie below a directory the user cannot enter, so the container binds a
    directory of the user's (`~/io/<name>`); bench bind-mounts that one over the io dir,
    so its own reads and writes go where the container's do. remove() copies the files
    back into the io dir and deletes the user's copy. The copy belongs to `owner`: the host
    ids of the user the container runs as.
    """

    def __init__(self, owner: tuple[int, int], user: Account, io_dir: Path, name: str) -> None:
        self.io_dir = io_dir
        self.staging = user.home / IO_SUBDIR / name
        self.staging.parent.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.staging.parent, user.uid, user.gid)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        shutil.copytree(io_dir, self.staging, symlinks=True)
        for path in (self.staging, *self.staging.rglob("*")):
            os.chown(path, *owner, follow_symlinks=False)
        _mount_bind(self.staging, io_dir)
        self._mounted = True

    def remove(self) -> None:
        if self._mounted:
            _umount(self.io_dir)
            self._mounted = False
            _copy_back(self.staging, self.io_dir)
        shutil.rmtree(self.staging, ignore_errors=True)


def _mount_bind(source: Path, target: Path) -> None:
    proc = subprocess.run(
        ["mount", "--bind", str(source), str(target)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"cannot bind {source} over {target}: {proc.stderr.strip()}")


def _umount(target: Path) -> None:
    proc = subprocess.run(["umount", str(target)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # Busy (a reader still has a file open): detach it; the files stay reachable.
        subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)


def _copy_back(staging: Path, io_dir: Path) -> None:
    """Regular files and directories only: never open the control FIFO (it would block)."""
    for path in sorted(staging.rglob("*")):
        target = io_dir / path.relative_to(staging)
        if path.is_symlink():
            continue
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.is_file():
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            shutil.copy2(path, target)


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
        if not (_subids_of(Path("/etc/subuid")) and _subids_of(Path("/etc/subgid"))):
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
            return Availability(False, f"rootless podman fails: {_tail(proc)}", SETUP_FIX)
        return Availability(True)

    def version(self) -> str:
        info = json.loads(_checked("info", "--format", "json"))
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
                raise BenchError(f"rootless podman could not import {image.tarball}: {_tail(proc)}")
        _ensure_pause_process()
        self._image_ref = reference

    def start(self, spec: StartSpec) -> ContainerHandle:
        image_ref = image_to_start(spec, self.name, self._image_ref)
        refusal = _capabilities().limits_refusal(
            self.name, host_cgroup_version(), spec.limits.set_keys()
        )
        if refusal:
            raise BenchError(f"{spec.name}: {refusal}")
        user = _need_account()
        _ensure_pause_process()
        owner = host_ids(user, spec.user)
        io = _IoDir(owner, user, spec.io_dir, spec.name)
        with undone_on_error(io.remove):
            return start_container(
                spec, lambda command: self._launch(user, owner, io, image_ref, spec, command)
            )

    def _launch(
        self,
        user: Account,
        owner: tuple[int, int],
        io: _IoDir,
        image_ref: str,
        spec: StartSpec,
        command: list[str],
    ) -> Launched:
        os.chown(io.staging / FIFO_NAME, *owner)  # the wrapper writes to it
        managed = create_cgroup(spec.name, Limits())
        delegated = host_cgroup_version() == "v2"
        with undone_on_error(managed.remove):
            if delegated:
                _delegate(managed, user, spec.limits)
        parent = cgroup_path(managed) if delegated else None
        argv = podman_argv(
            *run_args(spec, io.staging, parent), image_ref, *pinned(spec.limits, command)
        )

        def in_child() -> None:
            # Between fork and exec: join the cgroup while still root, then drop to the user
            # (Popen's user= would drop first, and the join would be refused).
            managed.join_current_process()
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)

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
            done = subprocess.run(
                argv,
                env=user_env(user),
                cwd=user.home,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                timeout=CLI_TIMEOUT_S,
                preexec_fn=in_child,
            )
            if done.returncode != 0:
                raise BenchError(f"rootless podman could not start {spec.name}: {_tail(done)}")
            attrs = json.loads(_checked("inspect", "--type", "container", spec.name))[0]
            pid = int(attrs["State"]["Pid"])
            if pid <= 0:
                raise BenchError(f"rootless podman reports no pid for {spec.name}")
            _, published = inspect_addresses(attrs, spec, None)
        self._running[spec.name] = (managed, pid)

        def helper_pids() -> list[int]:
            return _helpers_in(managed, pid)

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
            {pid for managed, init in self._running.values() for pid in _helpers_in(managed, init)}
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
        user = account()
        for name, target in mounted_io_dirs():  # before the copies they show
            _umount(target)
            if user is not None and (user.home / IO_SUBDIR / name).is_dir():
                # What the workload wrote goes where the killed run's results are.
                _copy_back(user.home / IO_SUBDIR / name, target)
            removed += 1
        for staging in staging_dirs():
            shutil.rmtree(staging, ignore_errors=True)
            removed += 1
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


def _delegate(managed: ManagedCgroup, user: Account, limits: Limits) -> list[str]:
    """Delegate the trial's cgroup to the user; refuse limits whose controller it lacks.

    Podman drops such a limit with a warning ("Quota discarded") and runs unlimited.
    """
    controllers = delegate(managed, user.uid, user.gid, LAUNCH_LEAF)
    for key, controller in LIMIT_CONTROLLERS.items():
        if getattr(limits, key) is not None and controller not in controllers:
            raise BenchError(
                f"{managed.name}: podman-rootless needs the {controller} controller "
                f"delegated for limits.{key}, and {managed.dirs[0].parent} does not give it "
                f"(delegated: {' '.join(controllers) or 'none'}); enable it in the parent "
                "cgroups' cgroup.subtree_control, or remove the limit"
            )
    return controllers


def limits_note() -> str:
    """Whether and how limits apply here (bench doctor): on v2, the controllers bench
    delegates to the user, found by delegating a probe cgroup."""
    refusal = _capabilities().limits_refusal(USER_NAME, host_cgroup_version(), ["cpus"])
    user = account()
    if refusal or user is None:
        return f"no limits on cgroup {host_cgroup_version()}"
    try:
        managed = create_cgroup(f"{NAME_PREFIX}probe-rootless-{os.getpid()}", Limits())
    except BenchError as exc:
        return f"no limits: {exc}"
    try:
        controllers = delegate(managed, user.uid, user.gid, LAUNCH_LEAF)
    except BenchError as exc:
        return f"no limits: {exc}"
    finally:
        managed.remove()
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


def _helpers_in(managed: ManagedCgroup, init: int) -> list[int]:
    """conmon, slirp4netns, rootlessport: the processes of the container's cgroup outside
    the container's own tree."""
    import psutil

    inside: set[int] = {init}
    with contextlib.suppress(psutil.NoSuchProcess):
        inside |= {p.pid for p in psutil.Process(init).children(recursive=True)}
    return sorted(set(_cgroup_pids(managed)) - inside)


def _exit_code(name: str) -> int:
    proc = as_user("inspect", "--type", "container", "--format", "{{.State.ExitCode}}", name)
    try:
        return int(proc.stdout.strip())
    except ValueError:
        return 137  # gone: removed or killed with the cgroup


def _cgroup_pids(managed: ManagedCgroup) -> list[int]:
    """Every process in the cgroup and below it (v2: the launch leaf and the container's)."""
    pids: list[int] = []
    for directory, _dirs, _files in os.walk(managed.dirs[0]):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()]
    return pids


def _bench_containers() -> list[str]:
    return bench_containers(_checked)


def _bench_images() -> list[str]:
    return bench_images(_checked)


def staging_dirs() -> list[Path]:
    user = account()
    root = None if user is None else user.home / IO_SUBDIR
    if root is None or not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(NAME_PREFIX))


def mounted_io_dirs(name_prefix: str = NAME_PREFIX) -> list[tuple[str, Path]]:
    """(container name, mount point) of each bind of a user's io copy over a trial's io dir,
    from /proc/self/mountinfo (the copy may be deleted already)."""
    found: list[tuple[str, Path]] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = [_unescape(field) for field in line.split()]
        root = fields[3].removesuffix("//deleted")
        parent, _, name = root.rpartition("/")
        if parent.endswith(f"/{USER_NAME}/{IO_SUBDIR}") and name.startswith(name_prefix):
            found.append((name, Path(fields[4])))
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)
