"""Service trials: a server from the catalogue under the runtime, a load from the host.

The server runs in its own container or bench cgroup and is sampled like any workload; the
client (bench.loadgen) runs on the host, pinned to CPUs the server does not use, once the
server answers its probe. The CPU of the runtime's network helpers outside the server's
cgroup (docker-proxy, conmon) during the load is recorded as part of the runtime's cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError, InputError
from bench.probes import answers
from bench.servers import ServerParams, ServerSetup, server_kind
from bench.spec import STDERR_FILE

if TYPE_CHECKING:
    from bench.loadgen import LoadResult, LoadSpec
    from bench.plan import Trial
    from bench.results import TrialResult
    from bench.runtimes.base import Handle
    from bench.scenario import Scenario, WorkloadModel
    from bench.spec import NetworkMode

# Run-level server state (PostgreSQL's initialised data directory), inside the run dir.
STATE_SUBDIR = "services"
# A server that does not answer by then failed to start (PostgreSQL took 1.5 s here).
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.05
# The load generator stops itself at its duration; this covers its start and its exit.
LOAD_MARGIN_S = 30.0
# Loopback addresses need no flag; any other address is one a runtime made for this run.
_LOOPBACK_PREFIX = "127."
_CLOCK_TICKS_PER_S = 100  # USER_HZ of /proc/<pid>/stat; fixed at 100 on Linux


@dataclass(frozen=True)
class ServicePlan:
    """What one service trial starts: the server's setup and the load it receives."""

    setup: ServerSetup
    network: NetworkMode
    rate_per_s: float | None


def state_dir(run_dir: Path) -> Path:
    return run_dir / STATE_SUBDIR


def server_port(workload: WorkloadModel) -> int:
    assert workload.service is not None
    return workload.port or server_kind(workload.service).default_port


def server_params(workload: WorkloadModel, network: NetworkMode) -> ServerParams:
    """What the workload decides about its server."""
    return ServerParams(
        server_port(workload),
        network,
        body_bytes=workload.body_bytes,
        pgbench_scale=workload.pgbench_scale,
    )


def server_setup(workload: WorkloadModel, network: NetworkMode, state_dir: Path) -> ServerSetup:
    """The trial's server: argv, files and probe, listening on the workload's port."""
    assert workload.service is not None
    return server_kind(workload.service).build(server_params(workload, network), state_dir)


def load_spec(
    workload: WorkloadModel,
    endpoint: tuple[str, int],
    rate_per_s: float | None,
    target: str = "/",
) -> LoadSpec:
    """The client's bounded load on `endpoint` (InputError when the combination is invalid)."""
    from bench.loadgen import LoadSpec
    from bench.scenario import LoadModel

    assert workload.service is not None
    load = workload.load or LoadModel()
    host, port = endpoint
    return LoadSpec(
        kind=server_kind(workload.service).client,
        port=port,
        host=host,
        path=target,
        connections=load.connections,
        duration_s=load.duration_s,
        rate_per_s=rate_per_s,
        client_cpus=load.client_cpus,
        server_cpus=workload.server_cpus,
        threads=load.threads,
        message_size_bytes=load.message_size_bytes,
        operation=load.operation,
        max_requests=load.max_requests,
        host_created_by_run=not host.startswith(_LOOPBACK_PREFIX),
    )


def check_service(workload: WorkloadModel) -> None:
    """Refuse, at load time, a service bench cannot drive (ValueError for the scenario)."""
    from bench.loadgen import KINDS

    assert workload.service is not None
    kind = server_kind(workload.service)
    if kind.client not in KINDS:
        raise ValueError(
            f"service {kind.name!r}: no load generator for it yet (bench drives "
            f"{', '.join(KINDS)}); pick another service"
        )
    if not kind.standalone:
        raise ValueError(f"service {kind.name!r} fronts another tier; it cannot run alone")
    for rate in rates(workload):
        try:
            load_spec(workload, ("127.0.0.1", server_port(workload)), rate)
        except InputError as exc:
            raise ValueError(str(exc)) from None


def check_installed(scenario: Scenario) -> None:
    """InputError, before anything runs, when a service's server is not on this host."""
    from bench.servers import missing_files

    for workload in scenario.workloads:
        if workload.service is not None:
            kind = server_kind(workload.service)
            missing = missing_files(kind)
            if missing:
                raise InputError(
                    f"workload {workload.name!r}: service {kind.name} needs "
                    f"{', '.join(map(str, missing))}; install it: apt-get install {kind.package}"
                )


def prepare_services(scenario: Scenario, run_dir: Path, user: tuple[int, int] | None) -> None:
    """Once per run, outside any measurement: each service's run-level state (initdb and
    pgbench -i), once for every workload whose server needs the same state."""
    from bench.servers import prepare_run

    for workload in scenario.workloads:
        if workload.service is not None:
            params = server_params(workload, "host")
            prepare_run(server_kind(workload.service), params, state_dir(run_dir), user)


def discard_services(run_dir: Path) -> None:
    """Remove the run-level server state (a resumed run prepares it again)."""
    import shutil

    shutil.rmtree(state_dir(run_dir), ignore_errors=True)


def rates(workload: WorkloadModel) -> list[float | None]:
    """The offered rates of the workload's trials; [None] for one closed-loop trial."""
    load = workload.load
    return list(load.rate_per_s) if load is not None and load.rate_per_s else [None]


def helper_cpu_ticks(pids: list[int]) -> dict[int, int]:
    """User + system CPU ticks so far of each live pid in `pids` (and its reaped children)."""
    ticks: dict[int, int] = {}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        # utime, stime, cutime, cstime are fields 14-17 of stat(5); fields[0] is field 3.
        ticks[pid] = sum(int(value) for value in fields[11:15])
    return ticks


def helper_cpu_s(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds the helpers used between two reads; one that exited in between counts 0
    (its ticks are gone with it), never a negative share."""
    used = sum(after[pid] - ticks for pid, ticks in before.items() if pid in after)
    return used / _CLOCK_TICKS_PER_S


@dataclass
class ServedLoad:
    """What a service trial's client measured, and the helpers' CPU during it."""

    load: LoadResult
    helper_cpu_s: float
    ready_s: float
    load_started_s: float  # since the server's start (t0)
    load_ended_s: float


def drive(handle: Handle, trial: Trial, setup: ServerSetup, t0: float, io_dir: Path) -> ServedLoad:
    """Wait until the server answers, run the load against it, measure the helpers' CPU.

    BenchError (a failed trial, with the reason) when the server never answers or exits.
    """
    from bench.loadgen import run_load

    workload = trial.workload
    port = server_port(workload)
    endpoint = handle.endpoint(port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not answers(*endpoint, setup.probe, inside=(handle.pid, port)):
        exited = handle.wait(0.0)
        if exited is not None:
            raise BenchError(
                f"server {workload.service} exited (code {exited.exit_code}) before it "
                f"answered: {_stderr_tail(io_dir)}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"server {workload.service} did not answer a {setup.probe.kind} probe on "
                f"{endpoint[0]}:{endpoint[1]} within {READY_TIMEOUT_S:g} s: {_stderr_tail(io_dir)}"
            )
        time.sleep(READY_POLL_S)
    ready_s = time.monotonic() - t0
    spec = load_spec(workload, endpoint, trial.offered_rate_per_s, setup.target)
    helpers = handle.helper_pids()
    helpers_before = helper_cpu_ticks(helpers)
    started = time.monotonic()
    result = run_load(spec)
    ended = time.monotonic()
    helpers_after = helper_cpu_ticks(helpers)
    if handle.wait(0.0) is not None:
        raise BenchError(
            f"server {workload.service} exited during the load: {_stderr_tail(io_dir)}"
        )
    return ServedLoad(
        result, helper_cpu_s(helpers_before, helpers_after), ready_s, started - t0, ended - t0
    )


def _stderr_tail(io_dir: Path) -> str:
    from bench.workloads import last_lines

    return " | ".join(last_lines(io_dir / STDERR_FILE, 3)) or "no output on stderr"


def record(result: TrialResult, served: ServedLoad) -> None:
    """The client's numbers on the server's row (the group's result, one tier today)."""
    load = served.load
    result.requests = load.requests
    result.request_errors = load.errors
    result.requests_per_s = load.requests_per_s
    result.bytes_per_s = load.bytes_per_s
    result.load_s = load.duration_s
    result.client_cpu_s = load.client_cpu_s
    result.client_cpus = load.client_cpus
    result.client_saturated = load.client_saturated
    result.helper_cpu_s = served.helper_cpu_s
    result.ready_s = served.ready_s
    result.offered_rate_per_s = load.spec.rate_per_s
    if load.latency is not None and load.latency.count > 0:
        summary = load.latency.summary()
        result.latency_p50_s = summary.p50_s
        result.latency_p90_s = summary.p90_s
        result.latency_p99_s = summary.p99_s
        result.latency_p999_s = summary.p999_s
        result.latency_hist = load.latency.encode()
    if load.spec.kind == "tcp_stream":
        result.throughput, result.throughput_unit = load.bytes_per_s, "B/s"
    else:
        result.throughput, result.throughput_unit = load.requests_per_s, "req/s"
    if load.warnings:
        result.warnings = "; ".join(load.warnings)
    if load.errors:
        result.status = "failed"
        result.error = f"{load.errors} of {load.requests} requests failed"
