"""Podman through podman-py against `podman system service` (bench's own one when needed).

The OCI runtime is chosen per service, not per container: podman 4.x ignores the
`oci_runtime` field of a REST create (measured: `podman inspect` shows the service's
runtime), because `--runtime` is a global podman flag. So bench starts one private
service per OCI runtime it needs (`podman --runtime runc system service ...`) and
checks every container's runtime after create.
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
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bench.cgroups.locate import host_cgroup_version
from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes._container import (
    IO_MOUNT,
    ContainerHandle,
    Launched,
    engine_limit_options,
    start_container,
)
from bench.runtimes.base import Availability
from bench.spec import LABEL, NAME_PREFIX, StartSpec

if TYPE_CHECKING:
    from bench.image import WorkloadImage

SHARED_SOCKET = Path("/run/podman/podman.sock")
PRIVATE_SOCKET_DIR = Path("/run")
PRIVATE_SOCKET_PREFIX = "bench-podman-"
# /run/bench-podman-<owner pid>-<oci runtime>-<token>.sock: the owner pid tells gc whether
# it is stale; the token keeps two PodmanRuntime objects of one process apart.
_PRIVATE_SOCKET_RE = re.compile(
    rf"^{PRIVATE_SOCKET_PREFIX}(\d+)-([A-Za-z0-9_.]+)-([0-9a-f]+)\.sock$"
)
IMAGE_REPOSITORY = "bench-workload"
INSTALL_FIX = "apt-get install podman"
SERVICE_START_TIMEOUT_S = 30.0
SERVICE_STOP_TIMEOUT_S = 10.0
API_TIMEOUT_S = 120.0


def _podman_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
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
    proc = _podman_cli("info", "--format", "{{.Host.OCIRuntime.Name}}")
    engine_default = proc.stdout.strip() or "crun"
    if engine_default == "crun" and host_cgroup_version() == "hybrid" and shutil.which("runc"):
        return "runc"
    return engine_default


@dataclass
class _Service:
    """One `podman system service` endpoint and, when bench started it, its process."""

    base_url: str
    oci_runtime: str
    client: Any
    process: subprocess.Popen[bytes] | None = None
    socket_path: Path | None = None
    log: IO[bytes] | None = None


@dataclass
class PodmanRuntime:
    """Runs workloads in podman containers (implements bench.runtimes.base.Runtime).

    `base_url` pins one service (no private service is started then); by default the
    shared /run/podman/podman.sock is used when it answers with the right OCI runtime,
    else bench starts a private service for the run and stops it in close().
    """

    base_url: str | None = None
    name: str = "podman"
    _services: dict[str, _Service] = field(default_factory=dict, init=False, repr=False)
    _image_ref: str | None = field(default=None, init=False, repr=False)

    # --- services -------------------------------------------------------------------------

    def _client_for(self, oci_runtime: str | None) -> _Service:
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

    def _connect(self, base_url: str) -> _Service | None:
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
        return _Service(base_url=base_url, oci_runtime=runtime, client=client)

    def _shared_or_private(self, oci_runtime: str) -> _Service:
        if SHARED_SOCKET.is_socket():
            shared = self._connect(f"unix://{SHARED_SOCKET}")
            if shared is not None and shared.oci_runtime == oci_runtime:
                return shared
            if shared is not None:
                shared.client.close()
        return self._start_private(oci_runtime)

    def _restart_private(self, service: _Service) -> None:
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

    def _start_private(self, oci_runtime: str, socket_path: Path | None = None) -> _Service:
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
        argv = ["podman", "--runtime", oci_runtime, "system", "service", "--time=0", base_url]
        # Own session: a Ctrl-C aimed at bench must not kill the service before the runner
        # has removed its containers; close() stops it.
        # conmon writes a file named "oom" into its working directory when a container is
        # OOM-killed: give the service a directory of bench's own, not the user's.
        workdir = PRIVATE_SOCKET_DIR / "bench-podman-work"
        workdir.mkdir(mode=0o700, exist_ok=True)
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=workdir,
        )
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip()[-800:]
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

    # --- Runtime protocol -----------------------------------------------------------------

    def available(self) -> Availability:
        if shutil.which("podman") is None:
            return Availability(False, "the podman command is not installed", INSTALL_FIX)
        try:
            import podman  # noqa: F401
        except ImportError:
            return Availability(False, "podman-py is not installed", "pip install 'podman>=5'")
        try:
            self._client_for(None)
        except RuntimeUnavailable as exc:
            fix = (
                f"start a service: podman system service --time=0 {self.base_url}"
                if self.base_url
                else "run `podman info` and `podman system service` by hand to see why"
            )
            return Availability(False, str(exc), fix)
        return Availability(True)

    def default_oci_runtime(self) -> str:
        """The OCI runtime bench's podman uses when a scenario names none."""
        return default_oci_runtime()

    def version(self) -> str:
        service = self._client_for(None)
        version = service.client.version()
        return f"podman {version.get('Version', '?')} (OCI runtime {service.oci_runtime})"

    def prepare(self, image: WorkloadImage) -> None:
        """Import the rootfs tarball as `localhost/<tag>` unless that tag exists already."""
        service = self._client_for(None)
        reference = f"localhost/{image.tag}"
        if not service.client.images.exists(reference):
            # podman-py has no images.import(); load() wants a `podman save` archive, not a
            # rootfs tarball, so use the libpod REST endpoint behind `podman import`.
            with image.tarball.open("rb") as body:
                response = service.client.api.post(
                    "/images/import",
                    params={"reference": reference},
                    data=body,
                    headers={"Content-Type": "application/x-tar"},
                )
            if not response.ok:
                raise BenchError(
                    f"podman could not import {image.tarball} as {reference}: {response.text}"
                )
        self._image_ref = reference

    def start(self, spec: StartSpec) -> ContainerHandle:
        if self._image_ref is None:
            raise BenchError("podman: prepare(image) must run before start()")
        if not spec.name.startswith(NAME_PREFIX):
            raise BenchError(f"container name {spec.name!r} must start with {NAME_PREFIX!r}")
        service = self._client_for(spec.oci_runtime)
        image_ref = self._image_ref
        return start_container(spec, lambda command: _launch(service, image_ref, spec, command))

    def service_pids(self) -> list[int]:
        """Pids of the podman API service(s) in use (bench's own, or the shared one)."""
        pids: list[int] = []
        for service in self._services.values():
            if service.process is not None and service.process.poll() is None:
                pids.append(service.process.pid)
            elif service.process is None:
                pids.extend(_service_pids_listening_on(service.base_url))
        return sorted(set(pids))

    def monitor_pids(self) -> list[int]:
        """Pids of the per-container monitors (conmon) of running bench containers."""
        pids: set[int] = set()
        for service in self._services.values():
            with contextlib.suppress(Exception):
                for container in service.client.containers.list(filters={"label": f"{LABEL}=1"}):
                    container.reload()  # list() gives State as a string; inspect has ConmonPid
                    conmon = int(container.attrs["State"].get("ConmonPid") or 0)
                    if conmon > 0:
                        pids.add(conmon)
        return sorted(pids)

    def footprint_pids(self) -> list[int]:
        """Service plus monitors; runc/crun exit once a container runs, so none stay."""
        return sorted(set(self.service_pids()) | set(self.monitor_pids()))

    def leftovers(self) -> list[str]:
        # Not the imported image: it is a cache the next run reuses (content-addressed);
        # remove_leftovers (`bench gc`) removes it too.
        found = [f"podman container {name}" for name in _bench_containers()]
        found += [f"podman service pid {pid}" for pid in _stale_service_pids()]
        found += [f"podman service socket {path}" for path in _stale_sockets()]
        return found

    def remove_leftovers(self) -> int:
        removed = 0
        for name in _bench_containers():
            if _podman_cli("rm", "--force", "--time", "0", name).returncode == 0:
                removed += 1
        for ref in _bench_images():
            if _podman_cli("rmi", "--force", ref).returncode == 0:
                removed += 1
        removed += _stop_pids(_stale_service_pids())
        # After the services: a service stopped by SIGTERM may leave its socket file.
        for path in _stale_sockets():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

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


def _launch(service: _Service, image_ref: str, spec: StartSpec, command: list[str]) -> Launched:
    """Create and start the container; remove it again if the start fails."""
    from podman.errors import APIError, NotFound

    try:
        container = service.client.containers.create(
            image_ref, command=command, **_create_kwargs(spec)
        )
    except APIError as exc:
        raise BenchError(f"podman could not create {spec.name}: {exc}") from exc

    def kill() -> None:
        # SIGKILL at once: the wrapper's `sleep` is PID 1 and ignores SIGTERM (podman
        # would wait its 10 s stop timeout first).
        with contextlib.suppress(Exception):
            container.kill(signal="SIGKILL")

    def remove() -> None:
        with contextlib.suppress(NotFound):
            container.remove(force=True)

    def poll_exit() -> int | None:
        try:
            container.reload()
        except NotFound:
            return 137
        state = container.attrs.get("State", {})
        if state.get("Status") in ("exited", "stopped"):
            return int(state.get("ExitCode", 0))
        return None

    try:
        try:
            container.start()
        except APIError as exc:
            raise BenchError(
                f"podman could not start {spec.name} with OCI runtime {service.oci_runtime}: {exc}"
            ) from exc
        container.reload()
        actual = str(container.attrs.get("OCIRuntime", ""))
        if actual != service.oci_runtime:
            raise BenchError(
                f"podman ran {spec.name} under OCI runtime {actual!r}, not "
                f"{service.oci_runtime!r}; check containers.conf"
            )
        pid = int(container.attrs["State"]["Pid"])
        if pid <= 0:
            raise BenchError(f"podman reports no pid for {spec.name}: {container.attrs['State']}")
    except BaseException:
        kill()
        remove()
        raise
    return Launched(pid=pid, kill=kill, remove=remove, poll_exit=poll_exit)


def _create_kwargs(spec: StartSpec) -> dict[str, Any]:
    """podman-py create() arguments for the shared limits (docs/architecture.md)."""
    limits = spec.limits
    kwargs: dict[str, Any] = {
        "name": spec.name,
        "labels": dict(spec.labels),
        "working_dir": IO_MOUNT,
        "mounts": [{"type": "bind", "source": str(spec.io_dir), "target": IO_MOUNT}],
        "read_only": True,
        # podman-py maps security_opt to SELinux options, so no-new-privileges has its own key.
        "no_new_privileges": True,
        "cap_drop": ["ALL"],
        # Given explicitly: podman's defaults (nofile 1048576) fail without CAP_SYS_RESOURCE.
        "ulimits": [
            {"Name": name, "Soft": soft, "Hard": hard} for name, soft, hard in spec.rlimits
        ],
    }
    if not spec.network:
        kwargs["network_mode"] = "none"
    kwargs.update(engine_limit_options(limits))
    if spec.user is not None:
        kwargs["user"] = f"{spec.user[0]}:{spec.user[1]}"
    return kwargs


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=SERVICE_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SERVICE_STOP_TIMEOUT_S)


def _stop_pids(pids: list[int]) -> int:
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


def _bench_containers() -> list[str]:
    if shutil.which("podman") is None:
        return []
    proc = _podman_cli("ps", "--all", "--format", "json")
    if proc.returncode != 0:
        raise BenchError(f"`podman ps --all` failed: {proc.stderr.strip()}")
    names: list[str] = []
    for entry in json.loads(proc.stdout or "[]"):
        entry_names = entry.get("Names") or []
        labels = entry.get("Labels") or {}
        if labels.get(LABEL) == "1" or any(n.startswith(NAME_PREFIX) for n in entry_names):
            names.append(entry_names[0] if entry_names else entry["Id"])
    return sorted(names)


def _bench_images() -> list[str]:
    if shutil.which("podman") is None:
        return []
    proc = _podman_cli("images", "--format", "json")
    if proc.returncode != 0:
        raise BenchError(f"`podman images` failed: {proc.stderr.strip()}")
    refs: list[str] = []
    for entry in json.loads(proc.stdout or "[]"):
        for ref in entry.get("Names") or []:
            if ref.rpartition("/")[2].startswith(IMAGE_REPOSITORY):
                refs.append(ref)
    return sorted(refs)


def _owner_alive(owner_pid: int) -> bool:
    """True while the bench process that started a private service (named in its socket) runs."""
    return owner_pid == os.getpid() or Path(f"/proc/{owner_pid}").exists()


def _stale_sockets() -> list[Path]:
    stale = []
    for path in PRIVATE_SOCKET_DIR.glob(f"{PRIVATE_SOCKET_PREFIX}*.sock"):
        match = _PRIVATE_SOCKET_RE.match(path.name)
        if match and not _owner_alive(int(match.group(1))):
            stale.append(path)
    return sorted(stale)


def _stale_service_pids() -> list[int]:
    """Private podman services whose owning bench process is gone."""
    import psutil

    stale = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        for arg in cmdline:
            socket_name = arg.rpartition("/")[2]
            match = _PRIVATE_SOCKET_RE.match(socket_name)
            if arg.startswith("unix://") and match and not _owner_alive(int(match.group(1))):
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
