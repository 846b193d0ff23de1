"""One plan step: start its members, wait for them, measure them, stop them."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.naming import object_name
from bench.spec import StartSpec
from bench.trial import Observed, measured_row, trial_row

if TYPE_CHECKING:
    from bench.cgroups.model import CgroupReader, CgroupSnapshot
    from bench.footprint import Footprint
    from bench.plan import PlanStep, Trial
    from bench.results import TrialResult
    from bench.runtimes.base import ExitInfo, Handle, Runtime
    from bench.sampler import SampleColumns, Sampler
    from bench.servers import Peer, ServerSetup
    from bench.service import RunningTier, ServedLoad
    from bench.signals import Signals
    from bench.store import ResultStore

StepResults = list[tuple["TrialResult", "SampleColumns | None"]]


@dataclass
class StepContext:
    """What a step needs from its run."""

    store: ResultStore
    sampler: Sampler
    signals: Signals
    timeout_s: float
    user: tuple[int, int] | None
    # The run's workloads whose stop() failed (e.g. the daemon was gone): retried later.
    unstopped: list[Handle]


@dataclass
class Member:
    """A started trial of the step."""

    trial: Trial
    handle: Handle
    reader: CgroupReader
    first: CgroupSnapshot
    t0: float
    exit_info: ExitInfo | None = None
    wall_s: float | None = None
    setup: ServerSetup | None = None  # a service's server (one tier of it)
    served: ServedLoad | None = None  # what its client measured (the front tier)
    ready_s: float | None = None  # since t0, when its server first answered


def run_step(step: PlanStep, runtime: Runtime, ctx: StepContext) -> StepResults:
    """Start every trial of the step, wait for the non-aggressors, stop everything.

    A signal interrupts only the waits and the checks between starts: a runtime is never
    cut off half-way through starting or removing a container (see bench.signals).
    """
    started: list[Member] = []
    errors: dict[str, str] = {}
    service_errors: dict[str, str] = {}
    finished: StepResults = []
    idle = _footprint(runtime) if len(step.trials) > 1 else None
    try:
        for trial in step.trials:
            ctx.signals.check()
            if trial.tier and (errors or service_errors):  # a tier before it failed
                errors[trial.trial_id] = "not started: a tier it follows failed"
                continue
            try:
                member = start_member(trial, runtime, ctx, started)
            except BenchError as exc:
                errors[trial.trial_id] = str(exc)
                continue
            started.append(member)
            if member.setup is not None:
                try:
                    _wait_ready(member, ctx)
                except BenchError as exc:
                    service_errors[trial.trial_id] = str(exc)
        service_errors.update(serve_members(started, ctx, failed=bool(errors or service_errors)))
        if any(t.tier for t in step.trials) and (errors or service_errors):
            why = next(iter({**errors, **service_errors}.values()))
            for member in started:  # a stack measures nothing without every tier
                service_errors.setdefault(member.trial.trial_id, f"another tier failed: {why}")
        wait_members(started, ctx)
        finished = measure_members(started, runtime, ctx)
        for result, _samples in finished:
            result.group_size = len(step.trials)
            if idle is not None:
                result.runtime_pss_idle_bytes = idle.pss_bytes
            if result.trial_id in service_errors:
                result.status = "failed"
                result.error = service_errors[result.trial_id]
    finally:
        stop_seconds = stop_members(started, ctx, errors)
    for result, _samples in finished:
        result.stop_s = stop_seconds.get(result.trial_id)
        if result.trial_id in errors:
            result.error = "; ".join(filter(None, [result.error, errors[result.trial_id]]))
    failed: StepResults = [
        (trial_row(t, "failed", errors[t.trial_id]), None)
        for t in step.trials
        if t.trial_id in errors and all(r.trial_id != t.trial_id for r, _ in finished)
    ]
    return finished + failed


def start_member(
    trial: Trial, runtime: Runtime, ctx: StepContext, started: list[Member] | None = None
) -> Member:
    """Start one trial and take its cgroup's first read; nothing is left running on error.

    A tier of a multi-tier service is given the addresses of the tiers it needs, which
    are among the `started` members of its step.
    """
    from bench.cgroups import open_reader
    from bench.workloads import build_argv

    store = ctx.store
    io_dir = store.trial_dir(trial.trial_id)
    user, setup = ctx.user, None
    argv: tuple[str, ...] = ()
    if trial.workload.service is not None:
        from bench.servers import materialize, server_kind, server_user
        from bench.service import server_setup, state_dir, tier_of

        tier = tier_of(trial.workload, trial.tier)
        peers = _peers(trial, started or [])
        user = server_user(server_kind(tier.server), ctx.user)
        setup = server_setup(trial.workload, trial.network, state_dir(store.run_dir), tier, peers)
        materialize(setup, io_dir, user)  # chowns the io dir to the server's user too
        argv = setup.argv
    else:
        argv = build_argv(trial.workload)
        if user is not None:  # the workload writes its metrics and output files there
            os.chown(io_dir, *user)
    spec = StartSpec(
        name=object_name(store.run_dir.name, trial.trial_id),
        argv=argv,
        io_dir=io_dir.resolve(),
        limits=trial.limits,
        network=trial.network,
        ports=setup.ports if setup is not None else (),
        oci_runtime=trial.oci_runtime or None,
        labels=(("bench", "1"), ("bench.run", store.run_dir.name[:60])),
        user=user,
    )
    handle = runtime.start(spec)
    try:
        reader = open_reader(handle.cgroup)
        t0 = time.monotonic()
        first = reader.read()
    except BaseException:
        handle.stop()
        raise
    ctx.sampler.add(trial.trial_id, reader, t0, first)
    return Member(trial, handle, reader, first, t0, setup=setup)


def _peers(trial: Trial, started: list[Member]) -> tuple[Peer, ...]:
    """Where the tiers `trial` needs are reached from it: their endpoints (127.0.0.1 on
    the host's stack, their addresses on the run's network in bridge mode)."""
    from bench.servers import Peer
    from bench.service import server_port, tier_of

    workload = trial.workload
    peers = []
    for need in tier_of(workload, trial.tier).needs:
        tier = tier_of(workload, need)
        member = next(m for m in started if m.trial.tier == need)
        host, port = member.handle.endpoint(server_port(workload, tier))
        peers.append(Peer(need, tier.server, host, port))
    return tuple(peers)


def _running(member: Member, ctx: StepContext) -> RunningTier:
    from bench.service import RunningTier, tier_of

    server = tier_of(member.trial.workload, member.trial.tier).server
    io_dir = ctx.store.trial_dir(member.trial.trial_id)
    return RunningTier(member.trial.trial_id, server, member.handle, io_dir)


def _wait_ready(member: Member, ctx: StepContext) -> None:
    """Wait until a started tier answers (bench.service.wait_ready); BenchError if never."""
    from bench.service import server_port, tier_of, wait_ready

    assert member.setup is not None
    tier = tier_of(member.trial.workload, member.trial.tier)
    with ctx.signals.interruptible():
        wait_ready(_running(member, ctx), member.setup, server_port(member.trial.workload, tier))
    member.ready_s = time.monotonic() - member.t0


def serve_members(started: list[Member], ctx: StepContext, failed: bool = False) -> dict[str, str]:
    """Drive the front tier of a service with its load (bench.service.drive), unless a tier
    already `failed`; why each tier's trial failed.

    A service's servers do not end by themselves: once the load is done they count as
    finished.
    """
    from bench.service import drive, tier_of

    failures: dict[str, str] = {}
    tiers = [member for member in started if member.setup is not None]
    for member in tiers:
        if failed or member.trial.tier != tier_of(member.trial.workload).name:
            continue
        assert member.setup is not None
        try:
            with ctx.signals.interruptible():
                running = [_running(tier, ctx) for tier in tiers]
                member.served = drive(
                    _running(member, ctx), member.trial, member.setup, member.t0, running
                )
        except BenchError as exc:
            failures.update({tier.trial.trial_id: str(exc) for tier in tiers})
    for member in tiers:
        member.exit_info = member.handle.wait(0.0)
        member.wall_s = time.monotonic() - member.t0
    return failures


def wait_members(started: list[Member], ctx: StepContext) -> None:
    """Wait for the non-aggressors up to the trial timeout; then look at the aggressors."""
    deadline = time.monotonic() + ctx.timeout_s
    with ctx.signals.interruptible():
        for member in started:
            if member.trial.role != "aggressor" and member.setup is None:
                member.exit_info = member.handle.wait(max(deadline - time.monotonic(), 0.0))
                member.wall_s = time.monotonic() - member.t0
    for member in started:
        if member.trial.role == "aggressor":
            member.exit_info = member.handle.wait(0.0)
            member.wall_s = time.monotonic() - member.t0


def measure_members(started: list[Member], runtime: Runtime, ctx: StepContext) -> StepResults:
    """The final read of every member and its row, while every cgroup of the step exists."""
    host_probe_ms = _host_probe_ms() if len(started) > 1 else None
    footprint = _footprint(runtime)  # once per step
    finished: StepResults = []
    for member in started:
        trial = member.trial
        columns, final = ctx.sampler.finish(trial.trial_id)
        member.reader.close()
        if final is None:  # gone: a sandbox's engine removes it as the OOM kills it
            final = member.handle.totals_after_exit()
        seen = Observed(
            cgroup=member.handle.cgroup.display,
            start_s=member.handle.start_latency_s,
            boot_s=member.handle.boot_s,
            wall_s=member.wall_s,
            exit_info=member.exit_info,
            first=member.first,
            final=final,
            columns=columns,
            footprint=footprint,
        )
        result = measured_row(trial, seen, ctx.store.trial_dir(trial.trial_id))
        result.host_probe_ms = host_probe_ms
        result.ready_s = member.ready_s
        if member.served is not None:
            from bench.service import record

            record(result, member.served)
        finished.append((result, columns))
    served = next((m.served for m in started if m.served is not None), None)
    if served is not None:  # each tier's own CPU during the load
        for result, _columns in finished:
            result.load_cpu_s = served.tier_cpu_s.get(result.trial_id)
    return finished


def stop_members(
    started: list[Member], ctx: StepContext, errors: dict[str, str]
) -> dict[str, float]:
    """Stop every member, also after an error, in reverse start order (a front before the
    tiers it needs); the seconds each stop took."""
    stop_seconds: dict[str, float] = {}
    for member in reversed(started):
        trial_id = member.trial.trial_id
        with contextlib.suppress(KeyError):
            ctx.sampler.remove(trial_id)
        try:
            stop_seconds[trial_id] = member.handle.stop()
        except Exception as exc:  # keep stopping the others; retried at the end of the run
            errors.setdefault(trial_id, f"cleanup failed: {describe(exc)}")
            ctx.unstopped.append(member.handle)
            continue
        if member.setup is not None:
            from bench.servers import discard

            discard(member.setup, ctx.store.trial_dir(trial_id))
    return stop_seconds


def describe(exc: BaseException) -> str:
    """An exception as one line for a trial's error column."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:500]


def _footprint(runtime: Runtime) -> Footprint | None:
    from bench.footprint import measure_footprint

    return measure_footprint(runtime.footprint_pids())


def _host_probe_ms() -> float | None:
    """Fork and exec /bin/true on the host: can it still start a process, and how fast?

    The "host unharmed" check of isolation steps (a fork bomb must stay inside its limit).
    """
    import subprocess

    started = time.monotonic()
    try:
        subprocess.run(["/bin/true"], check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (time.monotonic() - started) * 1000
