"""Podman through podman-py against `podman system service` (bench.runtimes._podman_service
says which service and why one per OCI runtime).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes import _container, _network
from bench.runtimes import _oci as oci
from bench.runtimes._podman_service import (
    INSTALL_FIX,
    PRIVATE_SOCKET_DIR,
    Service,
    ServicePool,
    bench_containers,
    bench_images,
    default_oci_runtime,
    podman_cli,
    stale_service_pids,
    stale_sockets,
    stop_pids,
)
from bench.runtimes.base import Availability
from bench.spec import LABEL, StartSpec

if TYPE_CHECKING:
    from bench.image import WorkloadImage

__all__ = ["PRIVATE_SOCKET_DIR", "PodmanRuntime", "default_oci_runtime"]


@dataclass
class PodmanRuntime:
    """Runs workloads in podman containers (implements bench.runtimes.base.Runtime).

    `base_url` pins one service (no private service is started then); by default the
    shared /run/podman/podman.sock is used when it answers with the right OCI runtime,
    else bench starts a private service for the run and stops it in close().
    """

    base_url: str | None = None
    name: str = "podman"
    _pool: ServicePool = field(init=False, repr=False)
    _image_ref: str | None = field(default=None, init=False, repr=False)
    _network: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = ServicePool(self.base_url)

    def _client_for(self, oci_runtime: str | None) -> Service:
        return self._pool.client_for(oci_runtime)

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

    def oci_runtime_available(self, oci_runtime: str) -> Availability:
        # podman finds runc, crun and runsc by name ([engine.runtimes] of containers.conf
        # has their usual paths) and bench passes the flags itself: installed is enough.
        return oci.available(oci_runtime)

    def oci_runtime_version(self, oci_runtime: str) -> str:
        return oci.version(oci_runtime)

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

    def start(self, spec: StartSpec) -> _container.ContainerHandle:
        image_ref = _container.image_to_start(spec, self.name, self._image_ref)
        service = self._client_for(spec.oci_runtime)
        network = self._run_network() if spec.network in ("bridge", "published") else None
        return _container.start_container(
            spec, lambda command: _launch(service, image_ref, spec, command, network)
        )

    def _run_network(self) -> str:
        """The bridge network of this run, created on first use."""
        from podman.errors import APIError

        if self._network is None:
            name = _network.owned_network_name()
            try:
                self._client_for(None).client.networks.create(
                    name, driver="bridge", labels={LABEL: "1"}, dns_enabled=False
                )
            except APIError as exc:
                raise BenchError(
                    f"podman could not create network {name}: {exc}; `podman network ls` "
                    "shows what exists"
                ) from exc
            self._network = name
        return self._network

    def service_pids(self) -> list[int]:
        """Pids of the podman API service(s) in use (bench's own, or the shared one)."""
        return self._pool.service_pids()

    def monitor_pids(self) -> list[int]:
        """Pids of the per-container monitors (conmon) of running bench containers."""
        pids: set[int] = set()
        for service in self._pool.services():
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
        found += [f"podman network {name}" for name in _stale_networks()]
        found += [f"podman service pid {pid}" for pid in stale_service_pids()]
        found += [f"podman service socket {path}" for path in stale_sockets()]
        found += [str(sandbox) for sandbox in oci.orphan_sandboxes(self.name, _all_ids())]
        return found

    def remove_leftovers(self) -> int:
        removed = 0
        for name in _bench_containers():
            if podman_cli("rm", "--force", "--time", "0", name).returncode == 0:
                removed += 1
        for name in _stale_networks():  # after the containers attached to them
            if podman_cli("network", "rm", "--force", name).returncode == 0:
                removed += 1
        for ref in _bench_images():
            if podman_cli("rmi", "--force", ref).returncode == 0:
                removed += 1
        for sandbox in oci.orphan_sandboxes(self.name, _all_ids()):
            removed += oci.remove_sandbox(sandbox)
        removed += stop_pids(stale_service_pids())
        # After the services: a service stopped by SIGTERM may leave its socket file.
        for path in stale_sockets():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def close(self) -> None:
        """Remove the run's network, close clients and stop every service bench started."""
        network, self._network = self._network, None
        services = self._pool.services()
        if network is not None and services:
            # Left for `bench gc` when it still has containers or the service is gone.
            with contextlib.suppress(Exception):
                services[0].client.networks.get(network).remove(force=True)
        self._pool.close()


def _launch(
    service: Service,
    image_ref: str,
    spec: StartSpec,
    command: list[str],
    network: str | None = None,
) -> _container.Launched:
    """Create and start the container; remove it again if the start fails."""
    from podman.errors import APIError, NotFound

    try:
        container = service.client.containers.create(
            image_ref, command=command, **_create_kwargs(spec, network)
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

    with _container.undone_on_error(kill, remove):
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
        address, published = _network.inspect_addresses(container.attrs, spec, network)
        conmon = int(container.attrs["State"].get("ConmonPid") or 0)
    # conmon holds a published port open and relays the container's stdio; the
    # forwarding itself is iptables in the kernel (rootful podman has no proxy).
    helpers = (lambda: [conmon]) if conmon > 0 else None
    return _container.Launched(pid, kill, remove, poll_exit, address, published, helpers)


def _create_kwargs(spec: StartSpec, network_name: str | None = None) -> dict[str, Any]:
    """podman-py create() arguments for the shared limits; `network_name` is the run's
    network (bridge and published modes)."""
    limits = spec.limits
    kwargs: dict[str, Any] = {
        "name": spec.name,
        "labels": dict(spec.labels),
        "working_dir": _container.IO_MOUNT,
        "mounts": [{"type": "bind", "source": str(spec.io_dir), "target": _container.IO_MOUNT}],
        "read_only": True,
        # podman-py maps security_opt to SELinux options, so no-new-privileges has its own key.
        "no_new_privileges": True,
        "cap_drop": ["ALL"],
        # Given explicitly: podman's defaults (nofile 1048576) fail without CAP_SYS_RESOURCE.
        "ulimits": [
            {"Name": name, "Soft": soft, "Hard": hard} for name, soft, hard in spec.rlimits
        ],
    }
    if spec.network in ("none", "host"):
        kwargs["network_mode"] = spec.network
    elif network_name is None:
        raise BenchError(f"{spec.name}: network mode {spec.network} needs the run's network")
    else:
        kwargs["network_mode"] = "bridge"
        kwargs["networks"] = {network_name: {}}
    if spec.network == "published":
        # No host port: podman picks a free one on 127.0.0.1.
        kwargs["ports"] = {f"{port}/tcp": {"ip": _network.LOOPBACK} for port in spec.ports}
    kwargs.update(_container.engine_limit_options(limits))
    if spec.user is not None:
        kwargs["user"] = f"{spec.user[0]}:{spec.user[1]}"
    return kwargs


def _query(*args: str) -> str:
    """The output of a podman command that only lists; empty when podman is not installed."""
    if shutil.which("podman") is None:
        return ""
    proc = podman_cli(*args)
    if proc.returncode != 0:
        raise BenchError(f"`podman {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def _bench_containers() -> list[str]:
    return bench_containers(_query)


def _bench_images() -> list[str]:
    return bench_images(_query)


def _stale_networks() -> list[str]:
    """Networks bench created whose owning process is gone."""
    names = _query("network", "ls", "--format", "{{.Name}}").split()
    return sorted(name for name in names if _network.stale_network(name))


def _all_ids() -> set[str]:
    """The full id of every podman container, bench's or not."""
    return set(_query("ps", "--all", "--no-trunc", "--format", "{{.ID}}").split())
