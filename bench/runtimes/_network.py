"""What every runtime shares about network paths: checks, endpoints, owned object names.

A network object bench creates for a run (a docker or podman network, an LXC bridge) has
the owning process's pid in its name, so `bench gc` removes it only once that process is
gone and never a network a run in progress still uses.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.spec import NAME_PREFIX

if TYPE_CHECKING:
    from bench.spec import NetworkMode, StartSpec

LOOPBACK = "127.0.0.1"
# bench-net-<owner pid>-<token>: docker and podman networks of one run.
NETWORK_PREFIX = f"{NAME_PREFIX}net-"
_NETWORK_RE = re.compile(rf"^{re.escape(NETWORK_PREFIX)}(\d+)-[0-9a-f]+$")


def owned_network_name() -> str:
    """A fresh network name carrying this process's pid (see the module docstring)."""
    return f"{NETWORK_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def owner_alive(owner_pid: int) -> bool:
    """True while the bench process that created an object (its pid in the name) runs."""
    return owner_pid == os.getpid() or Path(f"/proc/{owner_pid}").exists()


def stale_network(name: str) -> bool:
    """A network bench named whose owning process is gone."""
    match = _NETWORK_RE.match(name)
    return match is not None and not owner_alive(int(match.group(1)))


def check_spec(spec: StartSpec, runtime: str) -> None:
    """BenchError unless `runtime` offers the spec's network mode (its registry entry says
    which) and the spec's ports make sense."""
    from bench.runtimes import registry

    modes = registry.entry(runtime).capabilities.network_modes
    if spec.network not in modes:
        raise BenchError(
            f"{runtime} does not support network mode {spec.network!r} (it offers "
            f"{', '.join(sorted(modes))}); choose one of those for {spec.name}"
        )
    bad = [p for p in spec.ports if not 1 <= p <= 65535]
    if bad or len(set(spec.ports)) != len(spec.ports):
        raise BenchError(f"{spec.name}: ports {list(spec.ports)} must be distinct, 1-65535")
    if spec.network == "host":
        ensure_ports_free(spec.ports)


def ensure_ports_free(ports: tuple[int, ...]) -> None:
    """BenchError naming the port when something on the host already listens on it."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # With SO_REUSEADDR a bind fails only for a listener, not for TIME_WAIT leftovers.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise BenchError(
                    f"port {port} is already in use on this host, and a workload on the host's "
                    "network needs it; stop what listens there (`ss -ltnp`) or use another port"
                ) from None


def listening(port: int, address: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on address:port (for tests and checks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        with contextlib.suppress(OSError):
            probe.connect((address, port))
            return True
    return False


@dataclass(frozen=True)
class Endpoints:
    """Where a host client reaches each of a started workload's ports."""

    name: str
    mode: NetworkMode
    addresses: dict[int, tuple[str, int]] = field(default_factory=dict)

    def endpoint(self, port: int) -> tuple[str, int]:
        if self.mode == "none":
            raise BenchError(
                f"{self.name} runs with network mode 'none': nothing outside reaches port "
                f"{port}; start it with network host, bridge or published"
            )
        found = self.addresses.get(port)
        if found is None:
            raise BenchError(
                f"port {port} is not one of {self.name}'s ports {sorted(self.addresses)}; "
                "list it in StartSpec.ports"
            )
        return found


def endpoints(
    spec: StartSpec,
    address: str | None = None,
    published: dict[int, int] | None = None,
) -> Endpoints:
    """The endpoints of a workload started from `spec`.

    `address`: the container's address on the run network (bridge); `published`: the
    host port on 127.0.0.1 of each container port (published).
    """
    if spec.network == "none":
        return Endpoints(spec.name, "none")
    if spec.network == "host":
        return Endpoints(spec.name, "host", {p: (LOOPBACK, p) for p in spec.ports})
    if spec.network == "bridge":
        if address is None:
            raise BenchError(f"{spec.name} has no address on the run's network")
        return Endpoints(spec.name, "bridge", {p: (address, p) for p in spec.ports})
    missing = [p for p in spec.ports if published is None or p not in published]
    if published is None or missing:
        raise BenchError(f"{spec.name}: no host port was published for port(s) {missing}")
    return Endpoints(spec.name, "published", {p: (LOOPBACK, published[p]) for p in spec.ports})


def inspect_addresses(
    attrs: dict[str, Any], spec: StartSpec, network: str | None
) -> tuple[str | None, dict[int, int] | None]:
    """From docker's or podman's inspect data: the container's address on the run
    network and its published host ports (both engines use the same layout)."""
    settings = attrs.get("NetworkSettings") or {}
    address = None
    if network is not None:
        address = (settings.get("Networks") or {}).get(network, {}).get("IPAddress") or None
    if spec.network != "published":
        return address, None
    published: dict[int, int] = {}
    for port in spec.ports:
        for binding in (settings.get("Ports") or {}).get(f"{port}/tcp") or []:
            if binding.get("HostIp") == LOOPBACK and binding.get("HostPort"):
                published[port] = int(binding["HostPort"])
    return address, published
