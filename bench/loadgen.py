"""Load from real generators on the host (wrk, h2load, sockperf, iperf3, ...), bounded.

The generator runs as one child of bench, pinned with taskset to CPUs the server does not
use; bench reads its CPU time from the child's rusage and the client CPUs' busy time from
/proc/stat, and warns when the client, not the server, was the limit. What a load is
(LoadSpec) and its checks are in bench.loadspec.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.clientproc import ChildRun, busy_fraction, run_child
from bench.errors import BenchError
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
from bench.loadspec import (
    H2LOAD_CLIENT_RATE_PER_S,
    H2LOAD_TICK_S,
    MAX_REQUESTS,
    LoadSpec,
    format_cpus,
)
from bench.pyimage import PYTHON_ARGV
from bench.queuesvc import load_argv

# redis-benchmark runs a request count, not a duration; its own default count.
REDIS_DEFAULT_REQUESTS = 100_000
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
# h2load's connection rate (-r) counts per period of whole milliseconds.
H2LOAD_RATE_PERIOD_S = 0.001


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
