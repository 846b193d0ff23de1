"""Load from real generators on the host (wrk, h2load, sockperf, iperf3, ...), bounded.

The generator runs as one child of bench, pinned with taskset to CPUs the server does not
use; bench reads its CPU time from the child's rusage and the client CPUs' busy time from
/proc/stat, and warns when the client, not the server, was the limit.
"""

from __future__ import annotations

import ipaddress
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.clientproc import ChildRun, busy_fraction, run_child
from bench.errors import BenchError, InputError
from bench.latency import LatencyHistogram, LatencySummary
from bench.loadparse import (
    WRK_SCRIPT,
    ParsedLoad,
    parse_h2load,
    parse_iperf3,
    parse_pgbench,
    parse_queue,
    parse_redis_benchmark,
    parse_sockperf,
    parse_wrk,
)
from bench.pyimage import PYTHON_ARGV
from bench.queuesvc import load_argv

KINDS = ("http", "tcp_rr", "tcp_stream", "redis", "pgbench", "mqtt")
OPEN_LOOP_KINDS = ("http", "tcp_rr", "pgbench", "mqtt")
# Kinds that measure at fixed offered rates only (a message queue has no closed loop here).
RATE_ONLY_KINDS = ("mqtt",)
MAX_DURATION_S = 600.0
MAX_CONNECTIONS = 10_000
# The default cap on requests: 600 s at 100k req/s, above anything measured here (79k).
MAX_REQUESTS = 60_000_000
# redis-benchmark runs a request count, not a duration; its own default count.
REDIS_DEFAULT_REQUESTS = 100_000
# The operations each kind can run (the first is the default): redis-benchmark -t tests and
# pgbench's built-in scripts.
OPERATIONS = {
    "redis": ("get", "set", "ping_inline", "ping_mbulk", "incr", "lpush", "rpush", "lpop",
              "rpop", "sadd", "hset", "spop", "zadd", "zpopmin", "lrange_100", "mset"),
    "pgbench": ("select-only", "tpcb-like", "simple-update"),
}  # fmt: skip
# wrk stops itself at -d and sockperf/iperf3 at -t; past this margin bench kills the group.
KILL_GRACE_S = 15.0
# Saturation rule. A normal wrk run against nginx here used 0.67-0.70 of its CPU, whose
# busy time was 0.78-0.83 (the rest, 0.11-0.13, is kernel work for its packets outside its
# rusage); with a CPU hog beside it the CPU was 1.00 busy, throughput fell from 64k to 24k
# req/s and wrk's own CPU fell to 0.46. So the client counts as saturated when it used
# >= 90 % of its CPUs, or when they had <= 5 % idle time and other work took >= 25 % of
# them (a quiet host where wrk alone keeps its CPU 0.95 busy is not flagged for that).
SATURATED_OWN_CPU_FRACTION = 0.90
SATURATED_BUSY_FRACTION = 0.95
SATURATED_OTHERS_FRACTION = 0.25
# An open-loop run that sent less than this share of its schedule fell behind it.
ON_SCHEDULE_FRACTION = 0.97
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# h2load's --rps timer fires at most every 10 ms (`max(0.01, 1 / rps)` in its source), and
# sends what came due since, back to back on the client's HTTP/1.1 connection (one request
# in flight). So each client offers at most one request per tick, and the clients connect
# spread over one tick: the aggregate is then one request every 1/rate (docs/load-generators.md).
H2LOAD_TICK_S = 0.01
H2LOAD_CLIENT_RATE_PER_S = 1 / H2LOAD_TICK_S
# h2load's connection rate (-r) counts per period of whole milliseconds.
H2LOAD_RATE_PERIOD_S = 0.001


def parse_cpus(text: str) -> frozenset[int]:
    """A cpuset list such as "1" or "0,2-3"."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise InputError(
            f"client_cpus/server_cpus {text!r}: expected a list like 1 or 0,2-3"
        ) from None
    if not cpus or min(cpus) < 0:
        raise InputError(f"client_cpus/server_cpus {text!r}: expected a list like 1 or 0,2-3")
    return frozenset(cpus)


def format_cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def default_cpus() -> tuple[str, str]:
    """(server CPUs, client CPUs): the first usable CPU serves, the others load; on 2 cores
    server 0 and client 1. On one CPU both share it (and the client will look saturated)."""
    usable = sorted(os.sched_getaffinity(0))
    server = usable[:1]
    client = usable[1:] or usable
    return format_cpus(frozenset(server)), format_cpus(frozenset(client))


@dataclass(frozen=True)
class LoadSpec:
    """One bounded load: what to send, where, for how long, from which CPUs.

    kind: "http" (wrk closed loop; h2load at a rate, one HTTP/1.1 client per 100 req/s,
    `connections` unused), "tcp_rr" (sockperf), "tcp_stream" (iperf3), "redis"
    (redis-benchmark running `operation` max_requests times, default 100k: a count, not a
    duration, which then only bounds it), "pgbench" (built-in script `operation` on
    `database` as `user`), "mqtt" (bench/apps/queueapp.py's open-loop client of the
    app-queue services, through the broker at host:port). rate_per_s None is closed loop
    (as fast as `connections` allow); a number is open loop at that rate (http, tcp_rr,
    pgbench, mqtt, which has no closed loop).
    host must be loopback unless `host_created_by_run` says the run created that address.
    """

    kind: str
    port: int
    host: str = "127.0.0.1"
    path: str = "/"
    connections: int = 16
    duration_s: float = 5.0
    rate_per_s: float | None = None
    client_cpus: str | None = None
    server_cpus: str | None = None
    threads: int | None = None
    message_size_bytes: int = 64
    request_timeout_s: float = 2.0
    max_requests: int | None = None
    operation: str | None = None
    database: str = "postgres"
    user: str = "bench"
    host_created_by_run: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"load kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise InputError(f"load host {self.host!r}: expected an IP address") from None
        if address not in LOOPBACK and not self.host_created_by_run:
            raise InputError(
                f"load host {self.host}: bench sends load only to 127.0.0.1 or to addresses "
                "the run created (set host_created_by_run for those)"
            )
        _check_range("port", self.port, 1, 65_535)
        _check_range("connections", self.connections, 1, MAX_CONNECTIONS)
        _check_range("duration_s", self.duration_s, 1, MAX_DURATION_S)
        if self.duration_s != int(self.duration_s):
            raise InputError(
                f"load duration_s = {self.duration_s}: expected whole seconds "
                "(wrk, sockperf, iperf3 and pgbench take whole seconds)"
            )
        if self.max_requests is not None:
            _check_range("max_requests", self.max_requests, 1, MAX_REQUESTS)
        allowed = OPERATIONS.get(self.kind, ())
        if self.operation is not None and self.operation not in allowed:
            expected = ", ".join(allowed) or f"none for kind {self.kind}"
            raise InputError(f"load operation {self.operation!r}: expected {expected}")
        for name in ("database", "user"):
            value = getattr(self, name)
            if not value or not all(c.isalnum() or c in "_-" for c in value):
                raise InputError(f"load {name} {value!r}: expected letters, digits, _ or -")
        _check_range("message_size_bytes", self.message_size_bytes, 14, 65_000)
        _check_range("request_timeout_s", self.request_timeout_s, 0.001, 60)
        if self.threads is not None:
            _check_range("threads", self.threads, 1, self.connections)
        if self.rate_per_s is not None:
            _check_range("rate_per_s", self.rate_per_s, 1, 10_000_000)
            if self.kind not in OPEN_LOOP_KINDS:
                raise InputError(
                    f"load kind {self.kind}: open loop (rate_per_s) needs kind "
                    f"{', '.join(OPEN_LOOP_KINDS)}; redis-benchmark and iperf3 have no rate "
                    "mode (docs/load-generators.md)"
                )
            most = MAX_CONNECTIONS * H2LOAD_CLIENT_RATE_PER_S
            if self.kind == "http" and self.rate_per_s > most:
                raise InputError(
                    f"load rate_per_s = {self.rate_per_s:g}: HTTP at a rate takes one client "
                    f"per {H2LOAD_CLIENT_RATE_PER_S:g} req/s, at most {MAX_CONNECTIONS}: "
                    f"expected at most {most:g}"
                )
        elif self.kind in RATE_ONLY_KINDS:
            raise InputError(
                f"load kind {self.kind} measures at fixed offered rates only: give "
                "load.rate_per_s, e.g. rate_per_s = [200, 500]"
            )
        if not self.path.startswith("/") or any(c.isspace() or ord(c) < 32 for c in self.path):
            raise InputError(f"load path {self.path!r}: expected /... without spaces")
        for cpus in (self.client_cpus, self.server_cpus):
            if cpus is not None:
                parse_cpus(cpus)

    @property
    def chosen_operation(self) -> str:
        """`operation`, or the kind's default ("" for kinds without operations)."""
        return self.operation or OPERATIONS.get(self.kind, ("",))[0]

    def resolved_client_cpus(self) -> frozenset[int]:
        """client_cpus, or every usable CPU the server does not use (default server: CPU 0)."""
        if self.client_cpus is not None:
            return parse_cpus(self.client_cpus)
        usable = frozenset(os.sched_getaffinity(0))
        server = parse_cpus(self.server_cpus or default_cpus()[0])
        return (usable - server) or usable


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InputError(f"load {name} = {value}: expected {low} to {high}")


@dataclass(frozen=True)
class LoadResult:
    """What the load achieved, and what it cost the client."""

    spec: LoadSpec
    argv: tuple[str, ...]
    requests: int
    errors: int
    duration_s: float
    requests_per_s: float
    bytes_per_s: float
    latency: LatencyHistogram | None
    client_cpus: str
    client_cpu_s: float
    client_cpus_busy_fraction: float
    client_saturated: bool
    schedule_lag_max_s: float | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def latency_summary(self) -> LatencySummary | None:
        return None if self.latency is None else self.latency.summary()


@dataclass(frozen=True)
class _Generator:
    program: str
    package: str
    argv: Callable[[LoadSpec, int, Path], list[str]]
    parse: Callable[[str, LoadSpec, Path], ParsedLoad]
    # Open loop: whether its own CPU time says it was saturated (False where it spins
    # between sends by design, as sockperf does).
    open_loop_cpu_rule: bool = False


def _wrk_argv(spec: LoadSpec, n_cpus: int, workdir: Path) -> list[str]:
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT)
    threads = spec.threads or min(n_cpus, spec.connections)
    per_thread = max(1, (spec.max_requests or MAX_REQUESTS) // threads)
    url = f"http://{_url_host(spec.host)}:{spec.port}{spec.path}"
    return [
        *("-t", str(threads), "-c", str(spec.connections), "-d", f"{int(spec.duration_s)}s"),
        *(
            "--timeout",
            f"{spec.request_timeout_s:g}s",
            "-s",
            str(script),
            url,
            "--",
            str(per_thread),
        ),
    ]


def h2load_clients(rate_per_s: float) -> int:
    """How many HTTP/1.1 clients h2load needs for `rate_per_s` (one per tick's request)."""
    return max(1, math.ceil(rate_per_s / H2LOAD_CLIENT_RATE_PER_S))


def _h2load_argv(spec: LoadSpec, n_cpus: int, workdir: Path) -> list[str]:
    rate = spec.rate_per_s or 1.0
    # Count-bounded (h2load's -r excludes -D): the schedule's requests, or the cap.
    requests = min(spec.max_requests or MAX_REQUESTS, max(1, round(rate * spec.duration_s)))
    clients = min(h2load_clients(rate), requests)
    threads = min(spec.threads or 1, clients)
    # Connections per period, spread over one tick so that the clients' ticks interleave.
    per_period = max(threads, math.ceil(clients * H2LOAD_RATE_PERIOD_S / H2LOAD_TICK_S))
    url = f"http://{_url_host(spec.host)}:{spec.port}{spec.path}"
    return [
        *("--h1", "-t", str(threads), "-c", str(clients), "-n", str(requests)),
        *("--rps", f"{rate / clients:.6g}", "-r", str(per_period), "--rate-period", "1ms"),
        *("-N", f"{round(spec.request_timeout_s * 1000)}ms"),
        *("--log-file", str(workdir / "log.tsv"), url),
    ]


def _parse_h2load(text: str, spec: LoadSpec, workdir: Path) -> ParsedLoad:
    return parse_h2load(text, _read_text(workdir / "log.tsv"), spec.rate_per_s or 1.0)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _sockperf_argv(spec: LoadSpec, n_cpus: int, workdir: Path) -> list[str]:
    mode = ["ping-pong"] if spec.rate_per_s is None else ["under-load", "--reply-every", "1"]
    if spec.rate_per_s is not None:
        mode += ["--mps", str(round(spec.rate_per_s))]
    return [
        *mode,
        *("--tcp", "-i", spec.host, "-p", str(spec.port), "-t", str(round(spec.duration_s))),
        *("-m", str(spec.message_size_bytes), "--full-rtt", "--full-log", str(workdir / "log.csv")),
    ]


def _iperf3_argv(spec: LoadSpec, n_cpus: int, workdir: Path) -> list[str]:
    return [
        *("-c", spec.host, "-p", str(spec.port), "-t", str(round(spec.duration_s))),
        *("-P", str(spec.connections), "-J"),
    ]


def _redis_argv(spec: LoadSpec, n_cpus: int, workdir: Path) -> list[str]:
    requests = spec.max_requests or REDIS_DEFAULT_REQUESTS
    return [
        *("-h", spec.host, "-p", str(spec.port), "-c", str(spec.connections)),
        *("-n", str(requests), "-t", spec.chosen_operation, "-d", str(spec.message_size_bytes)),
        *("--threads", str(spec.threads or 1), "--precision", "3"),
    ]


def _pgbench_argv(spec: LoadSpec, n_cpus: int, workdir: Path) -> list[str]:
    threads = spec.threads or min(n_cpus, spec.connections)
    # pgbench takes a duration (-T) or a count per client (-t), not both: with max_requests
    # it runs the count, and the duration only bounds it (bench kills it past that).
    if spec.max_requests is None:
        bound = ["-T", str(round(spec.duration_s))]
    else:
        bound = ["-t", str(max(1, spec.max_requests // spec.connections))]
    argv = [
        *("-h", spec.host, "-p", str(spec.port), "-U", spec.user, "-n"),
        *("-c", str(spec.connections), "-j", str(threads), *bound),
        *("-b", spec.chosen_operation, "-l", "--log-prefix", str(workdir / "txlog")),
    ]
    if spec.rate_per_s is not None:
        argv += ["-R", f"{spec.rate_per_s:g}"]
    return [*argv, spec.database]


GENERATORS = {
    "http": _Generator(
        "wrk", "wrk", _wrk_argv, lambda out, spec, _: parse_wrk(out, spec.connections)
    ),
    "tcp_rr": _Generator(
        "sockperf",
        "sockperf",
        _sockperf_argv,
        lambda out, spec, workdir: parse_sockperf(
            out, _read_text(workdir / "log.csv"), spec.rate_per_s
        ),
    ),
    "tcp_stream": _Generator(
        "iperf3", "iperf3", _iperf3_argv, lambda out, _, __: parse_iperf3(out)
    ),
    "redis": _Generator(
        "redis-benchmark", "redis-tools", _redis_argv, lambda out, _, __: parse_redis_benchmark(out)
    ),
    "pgbench": _Generator(
        "pgbench",
        "postgresql-client",
        _pgbench_argv,
        lambda out, _, workdir: parse_pgbench(out, sorted(workdir.glob("txlog.*"))),
    ),
    "mqtt": _Generator(
        PYTHON_ARGV[0],
        "python3-paho-mqtt",
        lambda spec, _, workdir: load_argv(spec, workdir / "latency.bin")[1:],
        lambda out, spec, workdir: parse_queue(
            out, (workdir / "latency.bin").read_bytes(), spec.message_size_bytes
        ),
        # It sleeps until each message's slot: a busy CPU means it could not keep up.
        open_loop_cpu_rule=True,
    ),
}


# The generators of a kind's open-loop runs where another tool than its closed loop's runs them.
RATE_GENERATORS = {
    # It sleeps until each tick: a busy CPU means late sends (their lag is in the latency).
    "http": _Generator(
        "h2load", "nghttp2-client", _h2load_argv, _parse_h2load, open_loop_cpu_rule=True
    ),
}


def generator_for(spec: LoadSpec) -> _Generator:
    """The generator that runs `spec`: its kind's, or its open-loop one at a rate."""
    if spec.rate_per_s is not None and spec.kind in RATE_GENERATORS:
        return RATE_GENERATORS[spec.kind]
    return GENERATORS[spec.kind]


def generator_programs() -> dict[str, str]:
    """Every generator program bench drives, with the Debian package that provides it."""
    generators = [*GENERATORS.values(), *RATE_GENERATORS.values()]
    return {generator.program: generator.package for generator in generators}


def _read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def run_load(spec: LoadSpec) -> LoadResult:
    """Run `spec`'s generator to completion (killed past its duration) and read its output."""
    generator = generator_for(spec)
    program = shutil.which(generator.program)
    taskset = shutil.which("taskset")
    if program is None or taskset is None:
        missing = generator.package if program is None else "util-linux"
        raise BenchError(f"{generator.program} is not installed: apt-get install {missing}")
    cpus = spec.resolved_client_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        workdir = Path(tmp)
        argv = [
            taskset,
            "-c",
            format_cpus(cpus),
            program,
            *generator.argv(spec, len(cpus), workdir),
        ]
        before = psutil.cpu_times(percpu=True)
        run = run_child(argv, workdir / "out.txt", spec.duration_s + KILL_GRACE_S)
        busy = busy_fraction(before, psutil.cpu_times(percpu=True), cpus)
        output = _read_text(workdir / "out.txt")
        if run.killed:
            raise BenchError(f"{generator.program} ran past its duration and was killed")
        if run.exit_code != 0:
            tail = "\n".join(output.strip().splitlines()[-5:])
            raise BenchError(f"{generator.program} exited with {run.exit_code}:\n{tail}")
        parsed = generator.parse(output, spec, workdir)
    return _result(spec, tuple(argv), parsed, cpus, run, busy, generator.open_loop_cpu_rule)


def _result(
    spec: LoadSpec,
    argv: tuple[str, ...],
    parsed: ParsedLoad,
    cpus: frozenset[int],
    run: ChildRun,
    busy: float,
    open_loop_cpu_rule: bool = False,
) -> LoadResult:
    duration_s = parsed.duration_s or run.wall_s
    own = run.cpu_s / (run.wall_s * len(cpus)) if run.wall_s > 0 else 0.0
    requests_per_s = parsed.requests / duration_s if duration_s > 0 else 0.0
    warnings: list[str] = []
    contended = busy >= SATURATED_BUSY_FRACTION and busy - own >= SATURATED_OTHERS_FRACTION
    cpu_bound = own >= SATURATED_OWN_CPU_FRACTION or contended
    cpu_warning = (
        f"load client saturated: it used {own:.0%} of CPUs {format_cpus(cpus)}, which "
        f"were {busy:.0%} busy; the numbers measure the client, not the server"
    )
    if spec.rate_per_s is None:
        saturated = cpu_bound
        if saturated:
            warnings.append(cpu_warning)
    else:
        # sockperf paces by spinning between sends, so its CPU says nothing; keeping to the
        # schedule does. pgbench draws its schedule from a Poisson process: allow 3 sigma.
        expected = spec.rate_per_s * duration_s
        allowed = max((1 - ON_SCHEDULE_FRACTION) * expected, 3 * math.sqrt(expected))
        behind = parsed.requests < expected - allowed
        if behind:
            warnings.append(
                f"load client behind schedule: {requests_per_s:.0f} of {spec.rate_per_s:g} "
                "req/s offered were sent; the client, not the server, set the rate"
            )
        # A client that sleeps until each slot and still had no idle CPU kept to its schedule
        # only just: its receive times (the latencies) include its own queueing.
        if open_loop_cpu_rule and cpu_bound:
            warnings.append(cpu_warning)
        saturated = behind or (open_loop_cpu_rule and cpu_bound)
    return LoadResult(
        spec=spec,
        argv=argv,
        requests=parsed.requests,
        errors=parsed.errors,
        duration_s=duration_s,
        requests_per_s=requests_per_s,
        bytes_per_s=parsed.bytes_total / duration_s if duration_s > 0 else 0.0,
        latency=parsed.latency,
        client_cpus=format_cpus(cpus),
        client_cpu_s=run.cpu_s,
        client_cpus_busy_fraction=busy,
        client_saturated=saturated,
        schedule_lag_max_s=parsed.schedule_lag_max_s,
        warnings=tuple(warnings),
    )
