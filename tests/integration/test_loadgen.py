"""The load instrument against real servers: wrk on nginx, sockperf, iperf3, tc netem.

Servers run on the host pinned to CPU 0 and the generators on the others, as a service
trial does; every server is stopped and checked gone at the end of its test.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from bench.latency import RELATIVE_PRECISION
from bench.loadgen import LoadResult, run_load
from bench.loadspec import LoadSpec, parse_cpus
from bench.probes import Probe, answers
from tests import hostservers
from tests.helpers import require, require_root
from tests.hostservers import (
    CLIENT_CPUS,
    SERVER_CPUS,
    Server,
    free_port,
    nginx_on_host,
    require_tools,
    start_server,
    with_group,
)

pytestmark = pytest.mark.integration

# 20 ms: large against the emulated VM's own request time (about 1 ms), and still 100
# round trips in a 2 s load (sockperf ping-pong keeps one request in flight).
KNOWN_DELAY_S = 0.020
# The server-side delay: 10 ms, so that time.sleep's wake-up overshoot (5 ms measured as a
# 5.27-5.29 ms rise on this shared host, 10 ms a 10.35-10.39 ms one) stays inside the margin.
SERVER_DELAY_S = 0.010


@pytest.fixture
def server_dir() -> Iterator[Path]:
    with hostservers.server_dir() as path:
        yield path


@pytest.fixture
def nginx() -> Iterator[Server]:
    with nginx_on_host() as server:
        yield server


@pytest.fixture
def sockperf_server(server_dir: Path) -> Iterator[Server]:
    require_tools("sockperf", "taskset")
    port = free_port()
    argv = ["sockperf", "server", "--tcp", "-i", "127.0.0.1", "-p", str(port)]
    server = start_server(argv, "127.0.0.1", port, server_dir, Probe("tcp"))
    yield server
    server.stop()


def client_cpus_idle() -> None:
    """A run's saturation verdict depends on the client CPUs being otherwise idle."""
    before = psutil.cpu_times(percpu=True)
    time.sleep(0.5)
    after = psutil.cpu_times(percpu=True)
    for cpu in parse_cpus(CLIENT_CPUS):
        span = sum(after[cpu]) - sum(before[cpu])
        busy = 1 - (after[cpu].idle - before[cpu].idle) / span
        require(busy < 0.3, f"CPU {cpu} is {busy:.0%} busy with other work")


def assert_ordered(result: LoadResult) -> None:
    assert result.latency is not None
    summary = result.latency.summary()
    assert 0 < summary.min_s <= summary.p50_s <= summary.p90_s <= summary.p99_s
    assert summary.p99_s <= summary.p999_s <= summary.max_s


def test_wrk_against_bare_nginx(nginx: Server) -> None:
    """Closed loop on CPU 1 against nginx on CPU 0: every request in the histogram once."""
    client_cpus_idle()
    spec = LoadSpec("http", nginx.port, path=nginx.target, duration_s=3, server_cpus=SERVER_CPUS)
    result = run_load(spec)
    assert result.requests > 1_000
    assert result.errors == 0
    assert result.latency is not None and result.latency.count == result.requests
    assert_ordered(result)
    assert result.duration_s == pytest.approx(3, abs=0.2)
    assert result.client_cpus == CLIENT_CPUS
    assert 0 < result.client_cpu_s < result.duration_s * len(parse_cpus(CLIENT_CPUS)) + 0.5
    assert not result.client_saturated, result.warnings
    assert result.bytes_per_s > result.requests_per_s * 1024  # 1 KiB bodies plus headers
    nginx.stop()
    assert not answers("127.0.0.1", nginx.port, Probe("tcp"), timeout_s=0.5)


def test_request_cap_stops_the_load(nginx: Server) -> None:
    result = run_load(
        LoadSpec("http", nginx.port, path=nginx.target, duration_s=2, max_requests=500)
    )
    assert 0 < result.requests <= 500


def test_hog_on_the_client_cpu_raises_the_saturation_warning(nginx: Server) -> None:
    """A CPU hog beside the client: the client, not nginx, limits (64k -> 24k req/s here)."""
    require_tools("stress-ng")
    hog = subprocess.Popen(
        ["taskset", "-c", CLIENT_CPUS, "stress-ng", "--cpu", str(len(parse_cpus(CLIENT_CPUS))),
         "--timeout", "10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        result = run_load(LoadSpec("http", nginx.port, path=nginx.target, duration_s=2))
    finally:
        with_group(hog.pid, signal.SIGKILL)
        hog.wait(timeout=10)
    assert result.client_saturated
    assert result.client_cpus_busy_fraction >= 0.95
    assert any("saturated" in warning for warning in result.warnings)


def test_open_loop_keeps_its_schedule(sockperf_server: Server) -> None:
    """sockperf at 2,000 msg/s (well under capacity): achieved within 3 %, every reply timed."""
    client_cpus_idle()
    rate = 2_000.0
    result = run_load(LoadSpec("tcp_rr", sockperf_server.port, duration_s=3, rate_per_s=rate))
    assert result.requests_per_s == pytest.approx(rate, rel=0.03)
    assert not result.client_saturated, result.warnings
    assert result.latency is not None and result.latency.count == result.requests
    assert result.schedule_lag_max_s is not None and result.schedule_lag_max_s >= 0
    assert_ordered(result)


def test_closed_loop_ping_pong(sockperf_server: Server) -> None:
    result = run_load(LoadSpec("tcp_rr", sockperf_server.port, duration_s=2))
    assert result.requests > 100 and result.errors == 0
    assert result.schedule_lag_max_s is None
    assert_ordered(result)


def test_stream_throughput(server_dir: Path) -> None:
    require_tools("iperf3", "taskset")
    port = free_port()
    argv = ["iperf3", "--server", "--bind", "127.0.0.1", "--port", str(port)]
    # A bare TCP connect would count as a failed test run for iperf3: give it time instead.
    server = start_server(argv, "127.0.0.1", port, server_dir, Probe("tcp"))
    try:
        result = run_load(LoadSpec("tcp_stream", port, connections=1, duration_s=2))
    finally:
        server.stop()
    assert result.bytes_per_s > 10e6
    assert result.latency is None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unused_private_30() -> tuple[str, str]:
    """Host and namespace addresses of a 10.254.x.y/30 that no route on this host reaches."""
    for _ in range(20):
        base = (10 << 24) | (254 << 16) | (secrets.randbelow(1 << 14) << 2)
        host, inside = (f"{base >> 24}.{(base >> 16) & 255}.{(base >> 8) & 255}.{(base & 255) + i}"
                        for i in (1, 2))  # fmt: skip
        routes = ip("-4", "route", "show", "to", "match", inside).stdout
        if all(line.startswith("default") for line in routes.splitlines()):
            return host, inside
    pytest.fail("no unused 10.254.0.0/16 subnet found for the test namespace")


@dataclass
class Netns:
    name: str
    host_veth: str
    host_address: str
    address: str


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A network namespace with a veth pair to the host on a private /30; gone afterwards."""
    require_root()
    require_tools("ip", "tc", "sockperf", "taskset")
    tag = secrets.token_hex(3)
    name, host_veth, inner_veth = f"bench-netem-{tag}", f"bnm{tag}h", f"bnm{tag}n"
    host_address, address = unused_private_30()
    ip("netns", "add", name)
    try:
        ip("link", "add", host_veth, "type", "veth", "peer", "name", inner_veth, "netns", name)
        ip("addr", "add", f"{host_address}/30", "dev", host_veth)
        ip("link", "set", host_veth, "up")
        ip("-n", name, "addr", "add", f"{address}/30", "dev", inner_veth)
        ip("-n", name, "link", "set", inner_veth, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield Netns(name, host_veth, host_address, address)
    finally:
        # Deleting one end removes the pair at once; a deleted namespace frees its end of the
        # pair later, from the kernel's cleanup work.
        ip("link", "del", host_veth, check=False)
        ip("netns", "del", name, check=False)
        assert name not in ip("netns", "list").stdout
        assert ip("link", "show", host_veth, check=False).returncode != 0


def netem(netns: Netns, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["tc", "qdisc", *args[:1], "dev", netns.host_veth, "root", *args[1:]]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


def ping_median_rtt_s(address: str, count: int = 20) -> float:
    """The median round trip of `count` pings to `address` (iputils ping, root: 50 ms apart)."""
    proc = subprocess.run(
        ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", address],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    times_ms = [float(t) for t in re.findall(r"time=([0-9.]+) ms", proc.stdout)]
    assert len(times_ms) >= count // 2, proc.stdout
    return statistics.median(times_ms) / 1000


def test_netem_delay_shows_in_p50(netns: Netns, server_dir: Path) -> None:
    """A known delay on the path (tc netem on the host's veth) raises p50 by that delay ±10 %,
    and by what ping's median round trip rose by, ±10 % of the delay. Under the v2 VM's
    emulated CPU the rise comes out 1.6-2.7 ms long for 20 ms (21.6, 22.5, 22.7 ms measured,
    ping 20.35 ms): sockperf's two user-space wake-ups from an idle vCPU cost more under TCG
    than back to back, and ping's echo is answered in the kernel; so there the rise must be at
    least ping's less 5 % and at most 15 % above it.
    """
    require(shutil.which("ping") is not None, "ping is missing: apt-get install iputils-ping")
    probe = netem(netns, "add", "netem", "delay", "1ms")
    # This host's kernel (6.18, no modules) lacks sch_netem: a capability of the kernel, not
    # a package bench could install, so the test skips there saying why. The cgroup v2 VM's
    # stock Debian kernel loads sch_netem (run-in-v2-vm.sh): there it must pass, so CI runs it.
    if probe.returncode != 0:
        message = f"sch_netem is not available in this kernel: {probe.stderr.strip()}"
        if os.environ.get("BENCH_V2VM"):
            pytest.fail(message + " (the VM loads it: see tests/v2vm/run-in-v2-vm.sh)")
        pytest.skip(message + "; it runs in the cgroup v2 VM (tests/v2vm)")
    assert netem(netns, "del").returncode == 0
    port = 11111
    argv = ["ip", "netns", "exec", netns.name, "taskset", "-c", SERVER_CPUS,
            "sockperf", "server", "--tcp", "-i", netns.address, "-p", str(port)]  # fmt: skip
    server = start_server(argv, netns.address, port, server_dir, Probe("tcp"))
    try:
        spec = LoadSpec("tcp_rr", port, host=netns.address, host_created_by_run=True, duration_s=2)
        ping_before_s = ping_median_rtt_s(netns.address)
        before = run_load(spec)
        assert netem(netns, "add", "netem", "delay", f"{KNOWN_DELAY_S * 1000:g}ms").returncode == 0
        ping_after_s = ping_median_rtt_s(netns.address)
        after = run_load(spec)
    finally:
        server.stop()
    assert before.latency is not None and after.latency is not None
    rise_s = after.latency.percentile_s(50) - before.latency.percentile_s(50)
    ping_rise_s = ping_after_s - ping_before_s
    print(
        f"\nnetem delay {KNOWN_DELAY_S * 1e3:g} ms: p50 rose by {rise_s * 1e3:.2f} ms, "
        f"ping's median round trip by {ping_rise_s * 1e3:.2f} ms"
    )
    if os.environ.get("BENCH_V2VM"):
        low_s, high_s = ping_rise_s - 0.05 * KNOWN_DELAY_S, ping_rise_s + 0.15 * KNOWN_DELAY_S
        assert low_s <= rise_s <= high_s
    else:
        assert abs(rise_s - ping_rise_s) <= 0.10 * KNOWN_DELAY_S
        assert rise_s == pytest.approx(KNOWN_DELAY_S, rel=0.10)


# A keep-alive HTTP server that answers every GET after sleeping argv[2] seconds.
DELAYING_SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    def do_GET(self):
        time.sleep(float(sys.argv[2]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def delayed_p50_s(server_dir: Path, delay_s: float) -> float:
    port = free_port()
    argv = [sys.executable, "-c", DELAYING_SERVER, str(port), str(delay_s)]
    server = start_server(argv, "127.0.0.1", port, server_dir, Probe("http"))
    try:
        result = run_load(LoadSpec("http", port, connections=1, duration_s=2))
    finally:
        server.stop()
    assert result.errors == 0 and result.latency is not None
    assert result.latency.count == result.requests > 100
    return result.latency.percentile_s(50)


def test_known_server_delay_shows_in_p50(server_dir: Path) -> None:
    """Where netem is missing: a server that sleeps 10 ms per request raises wrk's p50 by
    10 ms within 10 %."""
    require_tools("wrk", "taskset")
    rise_s = delayed_p50_s(server_dir, SERVER_DELAY_S) - delayed_p50_s(server_dir, 0.0)
    assert rise_s == pytest.approx(SERVER_DELAY_S, rel=0.10)


# nginx's worker stopped this long in the middle of an open-loop run.
STALL_S = 0.050


def stop_for(pids: list[int], after_s: float, length_s: float) -> threading.Thread:
    def stall() -> None:
        time.sleep(after_s)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(length_s)
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=stall)
    thread.start()
    return thread


def test_h2load_keeps_its_rate_and_a_stall_shows_in_the_tail(nginx: Server) -> None:
    """h2load at 2,000 req/s: achieved within 3 %, every request timed once; nginx's worker
    stopped 50 ms mid-run: the requests due meanwhile count it (p99 >= half of it: 1 % of
    4,000 is the 40 due in its first half), and the slowest one nearly all of it."""
    require_tools("h2load", "taskset")
    client_cpus_idle()
    rate = 2_000.0
    spec = LoadSpec("http", nginx.port, path=nginx.target, duration_s=2, rate_per_s=rate)
    quiet = run_load(spec)
    assert quiet.requests_per_s == pytest.approx(rate, rel=0.03)
    assert quiet.errors == 0 and not quiet.client_saturated, quiet.warnings
    assert quiet.latency is not None and quiet.latency.count == quiet.requests
    assert quiet.schedule_lag_max_s is not None and quiet.schedule_lag_max_s >= 0
    assert_ordered(quiet)
    workers = [child.pid for child in psutil.Process(nginx.process.pid).children(recursive=True)]
    stall = stop_for(workers, after_s=1.0, length_s=STALL_S)
    try:
        stalled = run_load(spec)
    finally:
        stall.join()
    assert stalled.errors == 0 and stalled.latency is not None
    summary = stalled.latency.summary()
    assert summary.p99_s >= STALL_S / 2, summary
    # The first request the stall holds was due up to one interval (0.5 ms) after it began,
    # and the histogram keeps values to 1/1024: a CI run's slowest was 49.906 ms.
    assert summary.max_s >= (STALL_S - 1 / rate) * (1 - RELATIVE_PRECISION), summary
    assert summary.max_s >= quiet.latency.summary().p999_s + STALL_S / 2
