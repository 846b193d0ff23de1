"""Every runtime in every network mode it declares: a real server answers a real request at
handle.endpoint(port), and stopping it leaves no network, bridge, veth, rule or listener."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from bench.errors import BenchError
from bench.runtimes import get_runtime, registry
from bench.runtimes._network import NETWORK_PREFIX, listening
from bench.spec import NAME_PREFIX, NETWORK_MODES, StartSpec
from tests.helpers import require, require_root

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.runtimes.base import Handle, Runtime
    from bench.spec import NetworkMode

pytestmark = pytest.mark.integration

BODY = "bench network path\n"
REQUEST_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 15.0
# The runtime's own process expected among helper_pids(), where one carries the traffic.
HELPER_NAMES = {
    ("docker", "published"): "docker-proxy",
    ("podman", "host"): "conmon",
    ("podman", "bridge"): "conmon",
    ("podman", "published"): "conmon",
    # Its forwarder: user space, outside the container's processes (slirp4netns and conmon
    # beside it).
    ("podman-rootless", "published"): "rootlessport",
}
# Each runtime in each mode its registry entry declares (the fake test runtimes aside).
CASES = [
    (name, mode)
    for name in ("bare", "docker", "podman", "podman-rootless", "lxc")
    for mode in NETWORK_MODES
    if mode in registry.entry(name).capabilities.network_modes
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(address: tuple[str, int]) -> str:
    """One bounded HTTP GET of the served file."""
    url = f"http://{address[0]}:{address[1]}/index.html"
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
        return str(response.read().decode())


def wait_get(address: tuple[str, int]) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            return get(address)
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def httpd_argv(port: int) -> tuple[str, ...]:
    # busybox is in the image and on the host; the working directory is the io dir.
    return ("/bin/busybox", "httpd", "-f", "-p", str(port), "-h", ".")


@dataclass(frozen=True)
class HostNetState:
    """What bench may create on the host for networking, counted to compare before/after."""

    engine_networks: frozenset[str]
    bridges: frozenset[str]
    veths: int
    iptables_rules: int


def _run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)
    return proc.stdout if proc.returncode == 0 else ""


def host_net_state() -> HostNetState:
    owned = re.compile(rf"^{re.escape(NETWORK_PREFIX)}{os.getpid()}-")
    networks = set()
    for engine in ("docker", "podman"):
        for name in _run(engine, "network", "ls", "--format", "{{.Name}}").split():
            if owned.match(name):
                networks.add(f"{engine} {name}")
    links = json.loads(_run("ip", "-j", "link", "show") or "[]")
    bridges = {
        link["ifname"]
        for link in links
        if re.match(rf"^{re.escape(NAME_PREFIX)}{os.getpid()}[a-z]$", link["ifname"])
    }
    veths = len(json.loads(_run("ip", "-j", "link", "show", "type", "veth") or "[]"))
    rules = sum(line.startswith("-A ") for line in _run("iptables-save").splitlines())
    return HostNetState(frozenset(networks), frozenset(bridges), veths, rules)


@pytest.fixture
def io_dir(tmp_path: Path) -> Path:
    path = tmp_path / "io"
    path.mkdir()
    (path / "index.html").write_text(BODY)
    return path


@pytest.fixture
def runtime(request: pytest.FixtureRequest, workload_image: WorkloadImage) -> Iterator[Runtime]:
    """A fresh runtime per test, so that close() removing the run's network is tested too."""
    require_root()
    if request.param == "docker":
        request.getfixturevalue("dockerd")
    instance = get_runtime(request.param)
    availability = instance.available()
    require(availability.ok, f"{request.param}: {availability.reason}")
    try:
        instance.prepare(workload_image)
        yield instance
    finally:
        instance.close()


def start(runtime: Runtime, spec: StartSpec, started: list[Handle]) -> Handle:
    handle = runtime.start(spec)
    started.append(handle)
    return handle


def spec_for(
    io_dir: Path, argv: tuple[str, ...], mode: NetworkMode, ports: tuple[int, ...]
) -> StartSpec:
    name = f"{NAME_PREFIX}net-test-{uuid.uuid4().hex[:8]}"
    return StartSpec(name=name, argv=argv, io_dir=io_dir, network=mode, ports=ports)


@pytest.mark.parametrize(
    ("runtime", "mode"), CASES, indirect=["runtime"], ids=[f"{r}-{m}" for r, m in CASES]
)
def test_server_answers_at_its_endpoint_and_nothing_is_left(
    runtime: Runtime, mode: NetworkMode, io_dir: Path, tmp_path: Path
) -> None:
    before = host_net_state()
    port = free_port()
    address: tuple[str, int] | None = None
    started: list[Handle] = []
    try:
        server = start(runtime, spec_for(io_dir, httpd_argv(port), mode, (port,)), started)
        if mode == "none":
            check_unreachable(runtime, server, port)
        else:
            address = server.endpoint(port)
            assert wait_get(address) == BODY
            check_helpers(runtime, mode, server)
        if mode == "published":
            assert address is not None and address[0] == "127.0.0.1"
        if mode == "bridge":
            assert address is not None
            check_reached_from_a_second_container(runtime, address, tmp_path, started)
    finally:
        for handle in started:
            handle.stop()
        runtime.close()
    after = host_net_state()
    assert after == before, f"left behind: before {before}, after {after}"
    for probe in {port, address[1] if address else port}:
        assert not listening(probe), f"port {probe} still answers after stop()"


def check_unreachable(runtime: Runtime, server: Handle, port: int) -> None:
    """No endpoint, and (in a container) nothing on the host's loopback either."""
    with pytest.raises(BenchError, match="network mode 'none'"):
        server.endpoint(port)
    if not registry.entry(runtime.name).baseline:  # bare metal has no network to take away
        time.sleep(1.0)  # time to bind, had it been on the host's stack
        assert not listening(port), "a server in mode none answers on the host"


def check_helpers(runtime: Runtime, mode: NetworkMode, server: Handle) -> None:
    helpers = server.helper_pids()
    assert all(psutil.pid_exists(pid) for pid in helpers), helpers
    expected = HELPER_NAMES.get((runtime.name, mode))
    if expected is not None:
        assert expected in {psutil.Process(pid).name() for pid in helpers}, helpers
    else:
        assert helpers == [], helpers


def check_reached_from_a_second_container(
    runtime: Runtime, address: tuple[str, int], tmp_path: Path, started: list[Handle]
) -> None:
    """Tiers of one trial: a client container on the run's network reaches the server."""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    # busybox wget (static glibc) crashes in its name lookup, so a raw HTTP/1.0 request.
    request = 'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | /bin/busybox nc -w 2 "$0" "$1"'
    argv = ("/bin/busybox", "sh", "-c", request, address[0], str(address[1]))
    client = start(runtime, spec_for(client_dir, argv, "bridge", ()), started)
    exit_info = client.wait(READY_TIMEOUT_S)
    assert exit_info is not None and exit_info.exit_code == 0, (
        (client_dir / "stderr.txt").read_text() if (client_dir / "stderr.txt").exists() else ""
    )
    assert (client_dir / "stdout.txt").read_bytes().endswith(b"\r\n\r\n" + BODY.encode())


@pytest.mark.parametrize(("runtime", "mode"), [("docker", "bridge")], indirect=["runtime"])
def test_an_undeclared_port_has_no_endpoint(
    runtime: Runtime, mode: NetworkMode, io_dir: Path
) -> None:
    port = free_port()
    handle = runtime.start(spec_for(io_dir, httpd_argv(port), mode, (port,)))
    try:
        with pytest.raises(BenchError, match="not one of"):
            handle.endpoint(port + 1)
    finally:
        handle.stop()


@pytest.mark.parametrize("runtime", ["bare", "docker", "lxc"], indirect=True)
def test_a_port_in_use_on_the_host_is_a_clear_error(runtime: Runtime, io_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        with pytest.raises(BenchError, match=f"port {port} is already in use"):
            runtime.start(spec_for(io_dir, httpd_argv(port), "host", (port,)))


@pytest.mark.parametrize("runtime", ["bare", "lxc"], indirect=True)
def test_an_unsupported_mode_is_refused(runtime: Runtime, io_dir: Path) -> None:
    with pytest.raises(BenchError, match="does not support network mode 'published'"):
        runtime.start(spec_for(io_dir, httpd_argv(free_port()), "published", (8080,)))


def dead_pid() -> int:
    """A pid whose process is gone, as that of a run that was SIGKILLed."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("runtime", ["docker", "podman"], indirect=True)
def test_a_killed_runs_network_is_a_leftover_and_removed(
    runtime: Runtime, workload_image: WorkloadImage
) -> None:
    name = f"{NETWORK_PREFIX}{dead_pid()}-0123abcd"
    _run(runtime.name, "network", "create", "--label", "bench=1", name)
    try:
        assert f"{runtime.name} network {name}" in runtime.leftovers()
        assert runtime.remove_leftovers() >= 1
        assert name not in _run(runtime.name, "network", "ls", "--format", "{{.Name}}").split()
    finally:
        _run(runtime.name, "network", "rm", name)
        runtime.prepare(workload_image)  # gc removed the image; the session's other tests need it


def test_a_killed_runs_lxc_bridge_and_rule_are_leftovers_and_removed(tmp_path: Path) -> None:
    from bench.runtimes.lxc import LxcRuntime

    require_root()
    bridge = f"{NAME_PREFIX}{dead_pid()}z"
    rule = ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", bridge, "-j", "ACCEPT"]
    rules_before = host_net_state().iptables_rules
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    subprocess.run(["iptables", "-I", "FORWARD", *rule], check=True)
    runtime = LxcRuntime(lxcpath=tmp_path / "lxcpath")
    try:
        assert f"lxc bridge {bridge}" in runtime.leftovers()
        assert runtime.remove_leftovers() >= 1
        assert not Path(f"/sys/class/net/{bridge}").exists()
        assert host_net_state().iptables_rules == rules_before
    finally:
        _run("iptables", "-D", "FORWARD", *rule)
        _run("ip", "link", "delete", bridge)
        runtime.close()


CHILD = """
import os, signal, sys, uuid
from pathlib import Path
from bench.image import build_image
from bench.runtimes import get_runtime
from bench.spec import StartSpec
name, lxcpath, io_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
runtime = get_runtime(name)
if name == "lxc":
    runtime.lxcpath = Path(lxcpath)
runtime.prepare(build_image(cache_dir=Path(sys.argv[4])))
argv = ("/bin/busybox", "sleep", "600")
spec = StartSpec(name=f"bench-net-kill-{uuid.uuid4().hex[:8]}", argv=argv, io_dir=io_dir,
                 network="bridge")
runtime.start(spec)
print(spec.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("runtime", ["docker", "podman", "lxc"], indirect=True)
def test_what_a_sigkilled_run_left_on_its_network_is_found_and_removed(
    runtime: Runtime, workload_image: WorkloadImage, tmp_path: Path
) -> None:
    """A run killed with a container on its bridge: gc removes container, network, rule."""
    lxcpath = tmp_path / "lxcpath"
    if runtime.name == "lxc":
        runtime.lxcpath = lxcpath  # type: ignore[attr-defined]
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    cache_dir = workload_image.tarball.parents[2]
    before = host_net_state()
    argv = [sys.executable, "-c", CHILD, runtime.name, str(lxcpath), str(io_dir), str(cache_dir)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, stderr[-2000:]
    container = stdout.strip()
    left = runtime.leftovers()
    assert any(container in item for item in left), left
    owned = f"{NAME_PREFIX}{'net-' if runtime.name != 'lxc' else ''}{child.pid}"
    assert any(owned in item for item in left), left
    runtime.remove_leftovers()
    assert not [item for item in runtime.leftovers() if container in item or owned in item]
    after = host_net_state()
    assert (after.iptables_rules, after.veths) == (before.iptables_rules, before.veths)
    runtime.prepare(workload_image)  # gc removed the image; the session's other tests need it
