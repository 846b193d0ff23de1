"""bench's connection to `podman system service`: the shared one, or private ones per OCI runtime.

podman 4.x ignores the `oci_runtime` field of a REST create (measured: `podman inspect`
shows the service's runtime), because `--runtime` is a global podman flag. So bench starts
one private service per OCI runtime it needs (`podman --runtime runc system service ...`)
when the shared one runs another, and stops it when the run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from bench.cgroups.locate import host_cgroup_version
from bench.errors import RuntimeUnavailable
from bench.image import IMAGE_REPOSITORY
from bench.runtimes._network import owner_alive
from bench.runtimes._oci import known, podman_global_args
from bench.runtimes._process import log_tail, spawn
from bench.spec import LABEL, NAME_PREFIX

SHARED_SOCKET = Path("/run/podman/podman.sock")
PRIVATE_SOCKET_DIR = Path("/run")
PRIVATE_SOCKET_PREFIX = "bench-podman-"
# /run/bench-podman-<owner pid>-<oci runtime>-<token>.sock: the owner pid tells gc whether
# it is stale; the token keeps two PodmanRuntime objects of one process apart.
_PRIVATE_SOCKET_RE = re.compile(
    rf"^{PRIVATE_SOCKET_PREFIX}(\d+)-([A-Za-z0-9_.]+)-([0-9a-f]+)\.sock$"
)
INSTALL_FIX = "apt-get install podman"
SERVICE_START_TIMEOUT_S = 30.0
SERVICE_STOP_TIMEOUT_S = 10.0
API_TIMEOUT_S = 120.0


def podman_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=False, timeout=timeout_s
    )


@cache
def default_oci_runtime() -> str:
    """The OCI runtime podman should use here: runc on hybrid hosts (crun refuses them).

    crun 1.8 fails with "cgroups in hybrid mode not supported" (docs/host-notes.md); elsewhere
    podman's own default from `podman info`. RuntimeUnavailable when podman is missing.
    """
    if shutil.which("podman") is None:
        raise RuntimeUnavailable(f"podman is not installed; fix: {INSTALL_FIX}")
    proc = podman_cli("info", "--format", "{{.Host.OCIRuntime.Name}}")
    engine_default = proc.stdout.strip() or "crun"
    if engine_default == "crun" and host_cgroup_version() == "hybrid" and shutil.which("runc"):
        return "runc"
    return engine_default


@dataclass
class Service:
    """One `podman system service` endpoint and, when bench started it, its process."""

    base_url: str
    oci_runtime: str
    client: Any
    process: subprocess.Popen[bytes] | None = None
    socket_path: Path | None = None
    log: IO[bytes] | None = None


@dataclass
class ServicePool:
    """The services one PodmanRuntime uses, one per OCI runtime (or the one `base_url`)."""

    base_url: str | None = None
    _services: dict[str, Service] = field(default_factory=dict, init=False, repr=False)

    def services(self) -> list[Service]:
        return list(self._services.values())

    def client_for(self, oci_runtime: str | None) -> Service:
        wanted = oci_runtime or (None if self.base_url else default_oci_runtime())
        key = wanted or "<pinned>"
        cached = self._services.get(key)
        if cached is not None:
            if cached.process is not None and cached.process.poll() is not None:
                self._restart_private(cached)
            return cached
        if self.base_url is not None:
            service = self._connect(self.base_url)
            if service is None:
                raise RuntimeUnavailable(
                    f"no podman service answers at {self.base_url}; start one with "
                    f"`podman system service --time=0 {self.base_url}` or drop the base_url"
                )
            if wanted is not None and service.oci_runtime != wanted:
                service.client.close()
                raise RuntimeUnavailable(
                    f"the podman service at {self.base_url} runs OCI runtime "
                    f"{service.oci_runtime}, not {wanted}; restart it with "
                    f"`podman --runtime {wanted} system service ...`"
                )
        else:
            assert wanted is not None
            service = self._shared_or_private(wanted)
        self._services[key] = service
        return service

    def _connect(self, base_url: str) -> Service | None:
        """A client for `base_url`, or None when nothing answers there."""
        import podman  # lazily: podman-py and requests are slow to import

        # Any: podman-py ships py.typed but leaves most methods unannotated.
        client: Any = podman.PodmanClient(base_url=base_url, timeout=API_TIMEOUT_S)
        try:
            if not client.ping():
                client.close()
                return None
            info = client.info()
        except Exception:  # any transport error means "not answering"
            client.close()
            return None
        runtime = str(info.get("host", {}).get("ociRuntime", {}).get("name", ""))
        return Service(base_url=base_url, oci_runtime=runtime, client=client)

    def _shared_or_private(self, oci_runtime: str) -> Service:
        # The shared service's runtime flags cannot be read back: a runtime that needs
        # flags of bench's (runsc) always gets a private service.
        if SHARED_SOCKET.is_socket() and not known(oci_runtime).flags:
            shared = self._connect(f"unix://{SHARED_SOCKET}")
            if shared is not None and shared.oci_runtime == oci_runtime:
                return shared
            if shared is not None:
                shared.client.close()
        return self._start_private(oci_runtime)

    def _restart_private(self, service: Service) -> None:
        """Start bench's private service again after it died, on the same socket.

        The same socket keeps the existing client, and every container handle made with
        it, working: the runner can still stop and remove the containers of the trial
        that failed when the service died (podman containers outlive their API service).
        """
        assert service.socket_path is not None
        if service.log is not None:
            service.log.close()
        fresh = self._start_private(service.oci_runtime, service.socket_path)
        fresh.client.close()
        service.process, service.log = fresh.process, fresh.log

    def _start_private(self, oci_runtime: str, socket_path: Path | None = None) -> Service:
        if shutil.which("podman") is None:
            raise RuntimeUnavailable(f"podman is not installed; fix: {INSTALL_FIX}")
        token = uuid.uuid4().hex[:8]
        socket_path = socket_path or (
            PRIVATE_SOCKET_DIR / f"{PRIVATE_SOCKET_PREFIX}{os.getpid()}-{oci_runtime}-{token}.sock"
        )
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        base_url = f"unix://{socket_path}"
        # Kept open for the service's lifetime (closed in close()), so no `with`.
        log = tempfile.TemporaryFile(prefix="bench-podman-service-")  # noqa: SIM115
        argv = [
            "podman",
            *podman_global_args(oci_runtime),
            "system",
            "service",
            "--time=0",
            base_url,
        ]
        # close() stops the service. conmon writes a file named "oom" into its working
        # directory when a container is OOM-killed: give the service a directory of bench's
        # own, not the user's.
        workdir = PRIVATE_SOCKET_DIR / "bench-podman-work"
        workdir.mkdir(mode=0o700, exist_ok=True)
        process = spawn(argv, log, cwd=workdir)
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_tail(log)
                log.close()
                raise RuntimeUnavailable(
                    f"`{' '.join(argv)}` exited with status {process.returncode}: {tail}"
                )
            if socket_path.is_socket():
                service = self._connect(base_url)
                if service is not None:
                    service.process, service.socket_path, service.log = process, socket_path, log
                    return service
            time.sleep(0.05)
        _stop_process(process)
        log.close()
        raise RuntimeUnavailable(
            f"the podman service did not answer on {socket_path} within "
            f"{SERVICE_START_TIMEOUT_S:.0f} s; try `{' '.join(argv)}` by hand"
        )

    def service_pids(self) -> list[int]:
        """Pids of the podman API service(s) in use (bench's own, or the shared one)."""
        pids: list[int] = []
        for service in self._services.values():
            if service.process is not None and service.process.poll() is None:
                pids.append(service.process.pid)
            elif service.process is None:
                pids.extend(_service_pids_listening_on(service.base_url))
        return sorted(set(pids))

    def close(self) -> None:
        """Close clients and stop (and unlink) every service bench started."""
        services, self._services = list(self._services.values()), {}
        for service in services:
            with contextlib.suppress(Exception):
                service.client.close()
            if service.process is not None:
                _stop_process(service.process)
            if service.log is not None:
                service.log.close()
            if service.socket_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    service.socket_path.unlink()


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=SERVICE_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SERVICE_STOP_TIMEOUT_S)


def stop_pids(pids: list[int]) -> int:
    """SIGTERM, then SIGKILL after a grace period; how many were running."""
    import psutil

    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            process.send_signal(signal.SIGTERM)
            processes.append(process)
    _, alive = psutil.wait_procs(processes, timeout=SERVICE_STOP_TIMEOUT_S)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=SERVICE_STOP_TIMEOUT_S)
    return len(processes)


def stale_sockets() -> list[Path]:
    stale = []
    for path in PRIVATE_SOCKET_DIR.glob(f"{PRIVATE_SOCKET_PREFIX}*.sock"):
        match = _PRIVATE_SOCKET_RE.match(path.name)
        if match and not owner_alive(int(match.group(1))):
            stale.append(path)
    return sorted(stale)


def stale_service_pids() -> list[int]:
    """Private podman services whose owning bench process is gone."""
    import psutil

    stale = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        for arg in cmdline:
            socket_name = arg.rpartition("/")[2]
            match = _PRIVATE_SOCKET_RE.match(socket_name)
            if arg.startswith("unix://") and match and not owner_alive(int(match.group(1))):
                stale.append(process.pid)
                break
    return sorted(stale)


def _service_pids_listening_on(base_url: str) -> list[int]:
    """Pids of `podman system service` processes serving `base_url` (a shared service)."""
    import psutil

    socket_path = base_url.removeprefix("unix://")
    pids = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "podman" and "service" in cmdline:
            given = [a for a in cmdline if a.startswith("unix://")]
            if socket_path in (a.removeprefix("unix://") for a in given) or (
                not given and socket_path == str(SHARED_SOCKET)
            ):
                pids.append(process.pid)
    return pids


def bench_containers(query: Callable[..., str]) -> list[str]:
    """bench's containers in `podman ps --all` as `query` runs it (rootful or rootless)."""
    names: list[str] = []
    for entry in json.loads(query("ps", "--all", "--format", "json") or "[]"):
        entry_names = entry.get("Names") or []
        labels = entry.get("Labels") or {}
        if labels.get(LABEL) == "1" or any(n.startswith(NAME_PREFIX) for n in entry_names):
            names.append(entry_names[0] if entry_names else entry["Id"])
    return sorted(names)


def bench_images(query: Callable[..., str]) -> list[str]:
    """bench's image references in `podman images` as `query` runs it."""
    refs: list[str] = []
    for entry in json.loads(query("images", "--format", "json") or "[]"):
        for ref in entry.get("Names") or []:
            if ref.rpartition("/")[2].startswith(IMAGE_REPOSITORY):
                refs.append(ref)
    return sorted(refs)
