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
from bench.naming import object_name
from bench.probes import answers
from bench.servers import Peer, ServerKind, ServerParams, ServerSetup, server_kind
from bench.spec import STDERR_FILE
from bench.stacks import Tier, stack_of

if TYPE_CHECKING:
    from bench.cgroups.model import CgroupReader
    from bench.loadgen import LoadResult
    from bench.loadspec import LoadSpec
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


def tier_of(workload: WorkloadModel, name: str = "") -> Tier:
    """The workload's tier called `name`; "" is the front (a single server's one tier)."""
    assert workload.service is not None
    stack = stack_of(workload.service)
    if not name:
        return stack.front
    for tier in stack.tiers:
        if tier.name == name:
            return tier
    raise InputError(f"service {workload.service!r} has no tier {name!r}")


def server_port(workload: WorkloadModel, tier: Tier | None = None) -> int:
    """The port a tier listens on: the workload's `port` for the front, else its default."""
    front = tier_of(workload)
    tier = tier or front
    default = server_kind(tier.server).default_port
    return (workload.port or default) if tier == front else default


def server_params(
    workload: WorkloadModel,
    network: NetworkMode,
    tier: Tier | None = None,
    peers: tuple[Peer, ...] = (),
) -> ServerParams:
    """What the workload decides about a tier's server (the front's when `tier` is None)."""
    return ServerParams(
        server_port(workload, tier),
        network,
        body_bytes=workload.body_bytes,
        pgbench_scale=workload.pgbench_scale,
        upstream=(peers[0].host, peers[0].port) if peers else None,
        peers=peers,
    )


def server_setup(
    workload: WorkloadModel,
    network: NetworkMode,
    state_dir: Path,
    tier: Tier | None = None,
    peers: tuple[Peer, ...] = (),
) -> ServerSetup:
    """A tier's server: argv, files and probe, listening on its port, given its peers."""
    tier = tier or tier_of(workload)
    params = server_params(workload, network, tier, peers)
    return server_kind(tier.server).build(params, state_dir)


def load_spec(
    workload: WorkloadModel,
    endpoint: tuple[str, int],
    rate_per_s: float | None,
    target: str = "/",
) -> LoadSpec:
    """The client's bounded load on `endpoint` (InputError when the combination is invalid)."""
    from bench.loadspec import LoadSpec
    from bench.scenario import LoadModel

    load = workload.load or LoadModel()
    host, port = endpoint
    return LoadSpec(
        kind=server_kind(tier_of(workload).server).client,
        port=port,
        host=host,
        path=load.path or target,
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
    from bench.loadspec import KINDS

    assert workload.service is not None
    stack = stack_of(workload.service)
    kind = server_kind(stack.front.server)
    if kind.client not in KINDS:
        raise ValueError(
            f"service {kind.name!r}: no load generator for it yet (bench drives "
            f"{', '.join(KINDS)}); pick another service"
        )
    if len(stack.tiers) == 1 and not kind.standalone:
        raise ValueError(f"service {kind.name!r} fronts another tier; it cannot run alone")
    ports = [server_port(workload, tier) for tier in stack.tiers]
    if len(set(ports)) != len(ports):
        raise ValueError(
            f"port {workload.port} is the port of another tier of {stack.name}; pick another"
        )
    for rate in rates(workload):
        try:
            load_spec(workload, ("127.0.0.1", server_port(workload)), rate)
        except InputError as exc:
            raise ValueError(str(exc)) from None


def tier_kinds(workload: WorkloadModel) -> list[ServerKind]:
    """The server kinds of every tier of a service workload (one for a single server)."""
    assert workload.service is not None
    return [server_kind(tier.server) for tier in stack_of(workload.service).tiers]


def check_installed(scenario: Scenario) -> None:
    """InputError, before anything runs, when a service's server is not on this host."""
    from bench.servers import missing_files

    for workload in scenario.workloads:
        if workload.service is None:
            continue
        for kind in tier_kinds(workload):
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
        if workload.service is None:
            continue
        for tier in stack_of(workload.service).tiers:
            params = server_params(workload, "host", tier)
            cgroup_name = object_name(run_dir.name, f"prep-{workload.name}-{tier.name}")
            prepare_run(server_kind(tier.server), params, state_dir(run_dir), user, cgroup_name)


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
    load_started_s: float  # since the front's start (its t0)
    load_ended_s: float
    # CPU-seconds each tier's own cgroup used during the load, by trial id.
    tier_cpu_s: dict[str, float]


@dataclass(frozen=True)
class RunningTier:
    """A started tier of a service trial: its trial id, handle and io dir."""

    trial_id: str
    server: str
    handle: Handle
    io_dir: Path


def wait_ready(tier: RunningTier, setup: ServerSetup, port: int) -> None:
    """Return once the tier's server answers its probe at its endpoint.

    BenchError (a failed trial, with the reason) when it exits first or never answers.
    """
    handle = tier.handle
    endpoint = handle.endpoint(port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not answers(*endpoint, setup.probe, inside=(handle.pid, port)):
        exited = handle.wait(0.0)
        if exited is not None:
            raise BenchError(
                f"server {tier.server} exited (code {exited.exit_code}) before it "
                f"answered: {_stderr_tail(tier.io_dir)}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"server {tier.server} did not answer a {setup.probe.kind} probe on "
                f"{endpoint[0]}:{endpoint[1]} within {READY_TIMEOUT_S:g} s: "
                f"{_stderr_tail(tier.io_dir)}"
            )
        time.sleep(READY_POLL_S)


def drive(
    front: RunningTier, trial: Trial, setup: ServerSetup, t0: float, tiers: list[RunningTier]
) -> ServedLoad:
    """Run the load against the front tier (already answering); measure the runtime's
    helpers' CPU and each tier's own CPU during it. `tiers` are every tier, front included.

    BenchError (a failed trial, with the reason) when a tier exits during the load.
    """
    from bench.loadgen import run_load

    workload = trial.workload
    endpoint = front.handle.endpoint(server_port(workload))
    spec = load_spec(workload, endpoint, trial.offered_rate_per_s, setup.target)
    helpers = [pid for tier in tiers for pid in tier.handle.helper_pids()]
    readers = _open_readers(tiers)
    try:
        cpu_before = {tid: reader.read_core().cpu_usage_ns for tid, reader in readers.items()}
        helpers_before = helper_cpu_ticks(helpers)
        started = time.monotonic()
        result = run_load(spec)
        ended = time.monotonic()
        helpers_after = helper_cpu_ticks(helpers)
        cpu_after = {tid: reader.read_core().cpu_usage_ns for tid, reader in readers.items()}
    finally:
        for reader in readers.values():
            reader.close()
    for tier in tiers:
        if tier.handle.wait(0.0) is not None:
            raise BenchError(
                f"server {tier.server} exited during the load: {_stderr_tail(tier.io_dir)}"
            )
    tier_cpu_s = {tid: (cpu_after[tid] - cpu_before[tid]) / 1e9 for tid in readers}
    return ServedLoad(
        result,
        helper_cpu_s(helpers_before, helpers_after),
        started - t0,
        ended - t0,
        tier_cpu_s,
    )


def _open_readers(tiers: list[RunningTier]) -> dict[str, CgroupReader]:
    """A reader of each tier's cgroup of its own (the sampler's run on another thread)."""
    from bench.cgroups import open_reader

    readers: dict[str, CgroupReader] = {}
    try:
        for tier in tiers:
            readers[tier.trial_id] = open_reader(tier.handle.cgroup)
    except BaseException:
        for reader in readers.values():
            reader.close()
        raise
    return readers


def _stderr_tail(io_dir: Path) -> str:
    from bench.workloads import last_lines

    return " | ".join(last_lines(io_dir / STDERR_FILE, 3)) or "no output on stderr"


def record(result: TrialResult, served: ServedLoad) -> None:
    """The client's numbers on the front tier's row (the other tiers' rows get their CPU
    during the load, load_cpu_s, in the step)."""
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
