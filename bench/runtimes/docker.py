"""Docker via the docker SDK: runs the wrapper of bench.runtimes._container in the image."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, RuntimeUnavailable
from bench.image import IMAGE_REPOSITORY
from bench.runtimes import _container, _network
from bench.runtimes import _oci as oci
from bench.runtimes.base import Availability
from bench.spec import LABEL, NAME_PREFIX

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

FIX = "start dockerd: `dockerd &` or `systemctl start docker`"
DAEMON_PROCESS_NAMES = ("dockerd", "containerd", "containerd-shim", "docker-proxy")
_API_TIMEOUT_S = 120


class DockerRuntime:
    """The Docker engine; `base_url` defaults to DOCKER_HOST or the local socket."""

    name = "docker"

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = base_url
        self._client: Any = None
        self._image_ref: str | None = None
        self._network: str | None = None

    def _connect(self) -> Any:
        """The SDK client, created on first use (the SDK import is slow)."""
        if self._client is None:
            import docker

            try:
                if self.base_url is None:
                    self._client = docker.from_env(timeout=_API_TIMEOUT_S)
                else:
                    self._client = docker.DockerClient(
                        base_url=self.base_url, timeout=_API_TIMEOUT_S
                    )
            except docker.errors.DockerException as exc:
                where = (
                    self.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
                )
                raise RuntimeUnavailable(
                    f"cannot reach the Docker daemon at {where}: {exc}. {FIX}"
                ) from exc
        return self._client

    def available(self) -> Availability:
        try:
            import docker
        except ImportError:
            return Availability(
                False, "the docker Python SDK is not installed", "pip install docker"
            )
        try:
            self._connect().ping()
        except RuntimeUnavailable as exc:
            return Availability(False, str(exc), FIX)
        except (docker.errors.DockerException, OSError) as exc:
            return Availability(False, f"the Docker daemon does not answer: {exc}", FIX)
        return Availability(True)

    def version(self) -> str:
        server = self._connect().version().get("Version", "unknown")
        return f"{server} (default OCI runtime {self.default_oci_runtime()})"

    def default_oci_runtime(self) -> str:
        """The OCI runtime dockerd uses when a scenario names none (for `bench doctor`)."""
        return str(self._connect().info().get("DefaultRuntime", "unknown"))

    def oci_runtime_available(self, oci_runtime: str) -> Availability:
        # dockerd runs only the OCI runtimes its daemon.json registers, with their flags.
        installed = oci.available(oci_runtime)
        if not installed.ok:
            return installed
        registered = self._connect().info().get("Runtimes") or {}
        return oci.docker_registration(oci_runtime, registered)

    def oci_runtime_version(self, oci_runtime: str) -> str:
        return oci.version(oci_runtime)

    def prepare(self, image: WorkloadImage) -> None:
        """Import the image tarball unless its digest tag is already present."""
        import docker

        client = self._connect()
        ref = f"{IMAGE_REPOSITORY}:{image.version_tag}"
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            try:
                client.api.import_image_from_file(
                    str(image.tarball),
                    repository=IMAGE_REPOSITORY,
                    tag=image.version_tag,
                    changes=[f"LABEL {LABEL}=1"],
                )
                client.images.get(ref)  # raises if the import silently failed
            except docker.errors.DockerException as exc:
                raise BenchError(
                    f"docker could not import the workload image {image.tarball} as {ref}: "
                    f"{exc}; check dockerd's log and free space in its data root"
                ) from exc
        self._image_ref = ref

    def _run_network(self) -> str:
        """The bridge network of this run, created on first use."""
        import docker

        if self._network is None:
            name = _network.owned_network_name()
            try:
                self._connect().networks.create(
                    name, driver="bridge", labels={LABEL: "1"}, check_duplicate=True
                )
            except docker.errors.APIError as exc:
                raise BenchError(
                    f"docker could not create network {name}: {exc.explanation or exc}; "
                    "`docker network ls` shows what exists (address pools may be exhausted)"
                ) from exc
            self._network = name
        return self._network

    def _run_options(self, spec: StartSpec, network_name: str | None = None) -> dict[str, Any]:
        """containers.create() options; `network_name` is the run's network (bridge and
        published modes)."""
        from docker.types import Ulimit

        limits = spec.limits
        network_mode = spec.network if spec.network in ("none", "host") else network_name
        if network_mode is None:
            raise BenchError(f"{spec.name}: network mode {spec.network} needs the run's network")
        options: dict[str, Any] = {
            "name": spec.name,
            "labels": dict(spec.labels),
            "network_mode": network_mode,
            "read_only": True,
            # podman's read-only mode mounts a tmpfs on /tmp by default; do the same so
            # a workload sees the same writable paths under both engines.
            "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},
            "working_dir": _container.IO_MOUNT,
            "volumes": {
                str(Path(spec.io_dir).resolve()): {"bind": _container.IO_MOUNT, "mode": "rw"}
            },
            "ulimits": [Ulimit(name=n, soft=soft, hard=hard) for n, soft, hard in spec.rlimits],
            "security_opt": ["no-new-privileges"],
            # Neither busybox sh nor stress-ng's cpu/vm stressors need a capability
            # (tests/integration/test_container_contract.py runs both with none).
            "cap_drop": ["ALL"],
            "auto_remove": False,
        }
        if spec.network == "published":
            # A 1-tuple: docker picks a free host port on 127.0.0.1 (docker-py's format).
            options["ports"] = {f"{port}/tcp": (_network.LOOPBACK,) for port in spec.ports}
        options.update(_container.engine_limit_options(limits))
        if spec.oci_runtime:
            options["runtime"] = spec.oci_runtime
        if spec.user is not None:
            options["user"] = f"{spec.user[0]}:{spec.user[1]}"
        return options

    def start(self, spec: StartSpec) -> _container.ContainerHandle:
        import docker

        image_ref = _container.image_to_start(spec, self.name, self._image_ref)
        client = self._connect()
        network = self._run_network() if spec.network in ("bridge", "published") else None
        options = self._run_options(spec, network)

        def launch(command: list[str]) -> _container.Launched:
            # create + start rather than containers.run(): run() leaks the created
            # container when start fails (e.g. an unknown OCI runtime).
            try:
                container = client.containers.create(image_ref, command, **options)
            except docker.errors.APIError as exc:
                raise BenchError(
                    f"docker could not create container {spec.name}: {exc.explanation or exc}"
                ) from exc

            def kill() -> None:
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    container.kill()

            def remove() -> None:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)

            def poll_exit() -> int | None:
                try:
                    container.reload()
                except docker.errors.NotFound:
                    return 137  # removed under us: as if SIGKILLed
                state = container.attrs["State"]
                return None if state.get("Running") else int(state.get("ExitCode", 0))

            with _container.undone_on_error(remove):
                try:
                    container.start()
                except docker.errors.APIError as exc:
                    raise BenchError(
                        f"docker could not start container {spec.name}: {exc.explanation or exc}"
                    ) from exc
                container.reload()
                pid = int(container.attrs["State"]["Pid"])
                if pid <= 0:
                    state = container.attrs["State"]
                    raise BenchError(
                        f"container {spec.name} is not running right after start "
                        f"(status {state.get('Status')}, error {state.get('Error')!r})"
                    )
                address, published = _network.inspect_addresses(container.attrs, spec, network)
            # docker-proxy forwards each published port from 127.0.0.1 (userland proxy).
            helpers = (lambda: _proxy_pids(address, spec.ports)) if published else None
            return _container.Launched(pid, kill, remove, poll_exit, address, published, helpers)

        return _container.start_container(spec, launch)

    def footprint_pids(self) -> list[int]:
        from bench.footprint import pids_named

        return pids_named(DAEMON_PROCESS_NAMES)

    def _leftover_objects(self) -> tuple[list[Any], list[Any], list[Any]]:
        client = self._connect()
        containers = {c.id: c for c in client.containers.list(all=True, filters={"label": LABEL})}
        for container in client.containers.list(all=True, filters={"name": NAME_PREFIX}):
            # The name filter matches substrings; keep true prefixes only.
            if container.name.startswith(NAME_PREFIX):
                containers.setdefault(container.id, container)
        images = client.images.list(name=IMAGE_REPOSITORY)
        listed = client.networks.list(names=[NAME_PREFIX])
        networks = [n for n in listed if _network.stale_network(n.name)]
        return list(containers.values()), images, networks

    def leftovers(self) -> list[str]:
        # Containers and networks: the imported image is a cache that the next run reuses;
        # `bench gc` (remove_leftovers) removes it too.
        containers, _images, networks = self._leftover_objects()
        found = [f"container {c.name}" for c in containers]
        found += [str(sandbox) for sandbox in oci.orphan_sandboxes(self.name, self._all_ids())]
        return sorted(found + [f"docker network {n.name}" for n in networks])

    def _all_ids(self) -> set[str]:
        """The full id of every container dockerd knows, bench's or not."""
        return {c.id for c in self._connect().containers.list(all=True, sparse=True)}

    def remove_leftovers(self) -> int:
        import docker

        containers, images, networks = self._leftover_objects()
        removed = 0
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed += 1
        for sandbox in oci.orphan_sandboxes(self.name, self._all_ids()):
            removed += oci.remove_sandbox(sandbox)
        for network in networks:  # after the containers attached to them
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
                removed += 1
        for image in images:
            with contextlib.suppress(docker.errors.ImageNotFound):
                self._client.images.remove(image.id, force=True)
                removed += 1
        return removed

    def close(self) -> None:
        """Remove the run's network (its containers are gone by now), close the client."""
        import docker

        network, self._network = self._network, None
        if network is not None and self._client is not None:
            # Left for `bench gc` when it still has containers or the daemon is gone.
            with contextlib.suppress(docker.errors.DockerException, OSError):
                self._client.networks.get(network).remove()
        if self._client is not None:
            self._client.close()
            self._client = None


def _proxy_pids(address: str | None, ports: tuple[int, ...]) -> list[int]:
    """The docker-proxy processes forwarding 127.0.0.1 to `address`:port, one per port."""
    import psutil

    wanted = {str(port) for port in ports}
    pids = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] != "docker-proxy":
            continue
        args = process.info["cmdline"] or []
        options = dict(zip(args[1::2], args[2::2], strict=False))
        if options.get("-container-ip") == address and options.get("-container-port") in wanted:
            pids.append(process.pid)
    return sorted(pids)
