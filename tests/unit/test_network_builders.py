"""What each runtime hands its engine per network mode, and the endpoints it reports: no root."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.runtimes._network import (
    check_spec,
    endpoints,
    inspect_addresses,
    owned_network_name,
    stale_network,
)
from bench.runtimes.docker import DockerRuntime
from bench.runtimes.lxc import network_lines
from bench.runtimes.podman import _create_kwargs
from bench.spec import NetworkMode, StartSpec

NETWORK = "bench-net-1234-0123abcd"


def spec(mode: NetworkMode, ports: tuple[int, ...] = (8080,)) -> StartSpec:
    return StartSpec(
        name="bench-0123abcd-0000-a1b2c3",
        argv=("/bin/busybox", "true"),
        io_dir=Path("/srv/io"),
        network=mode,
        ports=ports,
    )


@pytest.mark.parametrize(
    ("mode", "network_mode", "ports"),
    [
        ("none", "none", None),
        ("host", "host", None),
        ("bridge", NETWORK, None),
        ("published", NETWORK, {"8080/tcp": ("127.0.0.1",)}),
    ],
)
def test_docker_options_per_mode(
    mode: NetworkMode, network_mode: str, ports: dict[str, Any] | None
) -> None:
    options = DockerRuntime()._run_options(spec(mode), NETWORK)
    assert options["network_mode"] == network_mode
    assert options.get("ports") == ports


@pytest.mark.parametrize(
    ("mode", "network_mode", "networks", "ports"),
    [
        ("none", "none", None, None),
        ("host", "host", None, None),
        ("bridge", "bridge", {NETWORK: {}}, None),
        ("published", "bridge", {NETWORK: {}}, {"8080/tcp": {"ip": "127.0.0.1"}}),
    ],
)
def test_podman_kwargs_per_mode(
    mode: NetworkMode,
    network_mode: str,
    networks: dict[str, Any] | None,
    ports: dict[str, Any] | None,
) -> None:
    kwargs = _create_kwargs(spec(mode), NETWORK)
    assert kwargs["network_mode"] == network_mode
    assert kwargs.get("networks") == networks
    assert kwargs.get("ports") == ports


@pytest.mark.parametrize("mode", ["bridge", "published"])
def test_engines_refuse_a_run_network_mode_without_the_network(mode: NetworkMode) -> None:
    with pytest.raises(BenchError, match="needs the run's network"):
        DockerRuntime()._run_options(spec(mode))
    with pytest.raises(BenchError, match="needs the run's network"):
        _create_kwargs(spec(mode))


def test_lxc_network_lines_per_mode() -> None:
    assert network_lines(spec("none")) == ["lxc.net.0.type = empty", "lxc.net.0.flags = up"]
    assert network_lines(spec("host")) == ["lxc.net.0.type = none"]
    address = ipaddress.IPv4Interface("10.213.7.2/24")
    lines = network_lines(spec("bridge"), "bench-1234a", address)
    assert "lxc.net.0.type = veth" in lines
    assert "lxc.net.0.link = bench-1234a" in lines
    assert "lxc.net.0.ipv4.address = 10.213.7.2/24" in lines
    # No gateway: a container reaches its bridge's /24 and nothing beyond it.
    assert not any("gateway" in line for line in lines)
    with pytest.raises(BenchError, match="does not support network mode 'published'"):
        network_lines(spec("published"))


def test_endpoints_per_mode() -> None:
    assert endpoints(spec("host")).endpoint(8080) == ("127.0.0.1", 8080)
    assert endpoints(spec("bridge"), "172.18.0.2").endpoint(8080) == ("172.18.0.2", 8080)
    published = endpoints(spec("published"), "172.18.0.2", {8080: 32768})
    assert published.endpoint(8080) == ("127.0.0.1", 32768)
    with pytest.raises(BenchError, match="network mode 'none'"):
        endpoints(spec("none")).endpoint(8080)
    with pytest.raises(BenchError, match="not one of"):
        endpoints(spec("host")).endpoint(9090)
    with pytest.raises(BenchError, match="no host port was published"):
        endpoints(spec("published"), "172.18.0.2", {})


def test_inspect_addresses_reads_the_run_network_and_loopback_bindings() -> None:
    attrs = {
        "NetworkSettings": {
            "Networks": {NETWORK: {"IPAddress": "10.89.0.5"}, "other": {"IPAddress": "1.2.3.4"}},
            "Ports": {
                "8080/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "1111"},
                    {"HostIp": "127.0.0.1", "HostPort": "40000"},
                ]
            },
        }
    }
    assert inspect_addresses(attrs, spec("published"), NETWORK) == ("10.89.0.5", {8080: 40000})
    assert inspect_addresses(attrs, spec("bridge"), NETWORK) == ("10.89.0.5", None)


def test_check_spec_refuses_unsupported_modes_and_bad_ports() -> None:
    with pytest.raises(BenchError, match="does not support network mode 'bridge'"):
        check_spec(spec("bridge"), "bare")
    with pytest.raises(BenchError, match="does not support network mode 'published'"):
        check_spec(spec("published"), "lxc")
    with pytest.raises(BenchError, match="must be distinct"):
        check_spec(spec("bridge", (8080, 8080)), "docker")
    with pytest.raises(BenchError, match="must be distinct, 1-65535"):
        check_spec(spec("bridge", (0,)), "docker")


def test_check_spec_names_a_host_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        with pytest.raises(BenchError, match=f"port {port} is already in use"):
            check_spec(spec("host", (port,)), "bare")
        check_spec(spec("bridge", (port,)), "docker")  # in its own namespace: no conflict


def test_network_names_carry_the_owner_and_only_dead_owners_are_stale() -> None:
    name = owned_network_name()
    assert not stale_network(name)
    assert stale_network("bench-net-999999999-0123abcd")
    assert not stale_network("bench-network-of-someone")
