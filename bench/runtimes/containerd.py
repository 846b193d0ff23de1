"""containerd without docker, through its own client `ctr`: the layer under dockerd.

The workload image is imported as an OCI archive of the same tarball docker imports.
`ctr run` cannot set pids, cpuset or memory+swap limits, so each container runs in a
cgroup bench creates with the shared limits (as for bare metal) and ctr is told to use
it (`--cgroup`); runc then adds it to the hierarchies bench did not (devices, freezer).
docs/runtimes.md, "containerd", lists what ctr cannot set (user, rlimits).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cgroups.manage import cgroup_path, create_cgroup
from bench.errors import BenchError, RuntimeUnavailable
from bench.image import IMAGE_REPOSITORY
from bench.runtimes import _container
from bench.runtimes import _containerd_service as service
from bench.runtimes._network import owner_alive
from bench.runtimes._oci_archive import write_oci_archive
from bench.runtimes.base import Availability
from bench.spec import LABEL, NAME_PREFIX

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

# containerd's default capability set (`ctr oci spec`): dropped one by one, because ctr
# 1.6 takes no "ALL" (docker and podman get --cap-drop ALL).
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip
NAMESPACE_PREFIX = f"{NAME_PREFIX}ctr-"
# Killed by signal 9 (the exit code wait() reports when the init is gone without an "E").
_KILLED = 137


def _namespace() -> str:
    """bench-ctr-<owner pid>-<token>: one per runtime object, removed in close()."""
    return f"{NAMESPACE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _stale_namespace(name: str) -> bool:
    owner = name.removeprefix(NAMESPACE_PREFIX).partition("-")[0]
    return name.startswith(NAMESPACE_PREFIX) and owner.isdigit() and not owner_alive(int(owner))


def run_options(spec: StartSpec, cgroup: str) -> list[str]:
    """`ctr run` options for `spec` in the bench cgroup `cgroup` (its path, /bench/<name>)."""
    if spec.user is not None:
        raise BenchError(
            f"{spec.name}: ctr cannot run a container as another user (it has no --user); "
            "remove `user` from the scenario or leave containerd out"
        )
    io_mount = _container.IO_MOUNT
    options = [
        "--detach",
        "--null-io",
        "--cgroup", cgroup,
        "--read-only",
        "--cwd", io_mount,
        "--label", f"{LABEL}=1",
        "--mount", f"type=bind,src={Path(spec.io_dir).resolve()},dst={io_mount},options=rbind:rw",
        # As docker's --tmpfs and podman's read-only mode: a writable /tmp.
        "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev:mode=1777",
    ]  # fmt: skip
    for capability in DEFAULT_CAPABILITIES:
        options += ["--cap-drop", f"CAP_{capability}"]
    if spec.network == "host":
        options.append("--net-host")
    return options


class ContainerdRuntime:
    """Runs the wrapper with `ctr run` against a containerd (implements Runtime)."""

    name = "containerd"

    def __init__(self) -> None:
        self._daemon: service.Daemon | None = None
        self._namespace = _namespace()
        self._image_ref: str | None = None

    def available(self) -> Availability:
        missing = [tool for tool in ("ctr", "containerd") if shutil.which(tool) is None]
        if missing:
            return Availability(False, f"{', '.join(missing)} not installed", service.INSTALL_FIX)
        if os.geteuid() != 0:
            return Availability(False, "ctr needs root here", "run bench as root (sudo)")
        try:
            self._connect()
        except RuntimeUnavailable as exc:
            return Availability(False, str(exc), "check containerd's log above")
        return Availability(True)

    def _connect(self) -> service.Daemon:
        if self._daemon is None:
            self._daemon = service.connect()
        return self._daemon

    def version(self) -> str:
        daemon = self._connect()
        out = service.ctr_checked(daemon.address, self._namespace, "version")
        server = out.partition("Server:")[2].split()
        number = server[server.index("Version:") + 1] if "Version:" in server else "?"
        where = "private daemon" if daemon.process is not None else str(daemon.address)
        return f"{number} ({where}, runc)"

    def default_oci_runtime(self) -> None:
        """No OCI axis yet: containerd's runc shim (io.containerd.runc.v2)."""

    def prepare(self, image: WorkloadImage) -> None:
        """Import the image as an OCI archive into this runtime's namespace."""
        daemon = self._connect()
        ref = f"docker.io/library/{IMAGE_REPOSITORY}:{image.version_tag}"
        listed = service.ctr_checked(daemon.address, self._namespace, "images", "ls", "-q")
        if ref not in listed.split():
            with tempfile.TemporaryDirectory(prefix="bench-oci-") as tmp:
                archive = Path(tmp) / "image.tar"
                write_oci_archive(image, ref, archive)
                service.ctr_checked(
                    daemon.address, self._namespace, "images", "import", str(archive)
                )
        self._image_ref = ref

    def start(self, spec: StartSpec) -> _container.ContainerHandle:
        image_ref = _container.image_to_start(spec, self.name, self._image_ref)
        daemon = self._connect()
        address, namespace = daemon.address, self._namespace

        def launch(command: list[str]) -> _container.Launched:
            managed = create_cgroup(spec.name, spec.limits)
            pid_file = spec.io_dir / "ctr.pid"

            def kill() -> None:
                service.ctr(address, namespace, "tasks", "kill", "--signal", "SIGKILL", spec.name)

            def remove() -> None:
                service.ctr(address, namespace, "tasks", "delete", "--force", spec.name)
                service.ctr(address, namespace, "containers", "delete", spec.name)
                managed.kill_all()
                managed.remove()
                pid_file.unlink(missing_ok=True)  # when the run failed before it was read

            with _container.undone_on_error(remove):
                options = run_options(spec, cgroup_path(managed))
                service.ctr_checked(
                    address, namespace, "run", *options, "--pid-file", str(pid_file),
                    image_ref, spec.name, *command,
                )  # fmt: skip
                pid = int(pid_file.read_text())
                pid_file.unlink()

            def poll_exit() -> int | None:
                return None if Path(f"/proc/{pid}").exists() else _KILLED

            return _container.Launched(pid, kill, remove, poll_exit)

        return _container.start_container(spec, launch)

    def footprint_pids(self) -> list[int]:
        """The daemon and the runc shims of the running containers."""
        return [] if self._daemon is None else self._daemon.pids()

    def leftovers(self) -> list[str]:
        found = [f"containerd private daemon {s.state_dir}" for s in service.stale_private()]
        if service.answers(service.SYSTEM_SOCKET):
            found += [f"containerd namespace {ns}" for ns in _stale_system_namespaces()]
        return found

    def remove_leftovers(self) -> int:
        removed = 0
        for stale in service.stale_private():
            if service.answers(stale.address):
                for namespace in _namespaces(stale.address):
                    _clear_namespace(stale.address, namespace)
            service.stop_pids(service.daemon_pids_of(stale.address))
            service.remove_tree(stale.state_dir)
            service.remove_tree(stale.root_dir)
            removed += 1
        if service.answers(service.SYSTEM_SOCKET):
            for namespace in _stale_system_namespaces():
                _clear_namespace(service.SYSTEM_SOCKET, namespace)
                removed += 1
        service.remove_empty_parents()
        return removed

    def close(self) -> None:
        """Remove the namespace (containers, image), stop a private daemon."""
        daemon, self._daemon = self._daemon, None
        if daemon is None:
            return
        try:
            with contextlib.suppress(BenchError, OSError):
                _clear_namespace(daemon.address, self._namespace)
        finally:
            daemon.stop()
            service.remove_empty_parents()


def _namespaces(address: Path) -> list[str]:
    out = service.ctr(address, "default", "namespaces", "ls", "-q").stdout
    return [ns for ns in out.split() if ns.startswith(NAMESPACE_PREFIX)]


def _stale_system_namespaces() -> list[str]:
    return [ns for ns in _namespaces(service.SYSTEM_SOCKET) if _stale_namespace(ns)]


def _clear_namespace(address: Path, namespace: str) -> None:
    """Delete every task, container and image of `namespace`, then the namespace."""
    containers = service.ctr(address, namespace, "containers", "ls", "-q").stdout.split()
    for name in containers:
        service.ctr(address, namespace, "tasks", "delete", "--force", name)
        service.ctr(address, namespace, "containers", "delete", name)
    for ref in service.ctr(address, namespace, "images", "ls", "-q").stdout.split():
        service.ctr(address, namespace, "images", "delete", "--sync", ref)
    service.ctr(address, "default", "namespaces", "remove", namespace)
