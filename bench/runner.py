"""Executes a plan: start, sample, stop, always clean up, persist after every trial."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from bench import __version__
from bench.errors import BenchError, InputError
from bench.gc import not_of_live_runs, registered
from bench.host import git_commit, host_facts
from bench.plan import PlanStep, Trial, build_plan
from bench.results import (
    Manifest,
    ResultStore,
    RunStatus,
    TrialResult,
    TrialStatus,
    check_run_id,
)
from bench.runtimes.base import Availability
from bench.scenario import Scenario
from bench.scenario_load import load_scenario
from bench.spec import NAME_PREFIX, StartSpec

if TYPE_CHECKING:
    from bench.cgroups.model import CgroupReader, CgroupSnapshot
    from bench.footprint import Footprint
    from bench.image import WorkloadImage
    from bench.runtimes.base import ExitInfo, Handle, Runtime
    from bench.sampler import SampleColumns, Sampler

log = logging.getLogger("bench")

# Runtime errors (not workload failures) after which a runtime is given up for the run.
MAX_RUNTIME_ERRORS = 3


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; what was measured so far is kept.

    A KeyboardInterrupt, not an Exception: the many `except Exception` of runtime and
    client code must not swallow it.
    """


class Progress(Protocol):
    """What the runner tells its caller while it works (the CLI draws a progress bar)."""

    def planned(self, total: int) -> None: ...
    def trial_started(self, trial: Trial) -> None: ...
    def trial_finished(self, result: TrialResult) -> None: ...
    def note(self, message: str) -> None: ...


class QuietProgress:
    def planned(self, total: int) -> None: ...
    def trial_started(self, trial: Trial) -> None: ...
    def trial_finished(self, result: TrialResult) -> None: ...
    def note(self, message: str) -> None:
        log.info(message)


@dataclass
class RunOptions:
    results_dir: Path = Path("results")
    run_id: str | None = None
    runtimes: list[str] | None = None
    resume: Path | None = None
    quick: bool = False


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    status: RunStatus
    trials: list[TrialResult]
    skipped_runtimes: dict[str, str] = field(default_factory=dict)


@dataclass
class _Started:
    trial: Trial
    handle: Handle
    reader: CgroupReader
    first: CgroupSnapshot
    t0: float
    exit_info: ExitInfo | None = None
    wall_s: float | None = None


@dataclass
class _Run:
    """What every step of one run shares."""

    scenario: Scenario
    store: ResultStore
    manifest: Manifest
    progress: Progress
    signals: _Signals
    user: tuple[int, int] | None
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # Runtimes given up during the run: closed at the end, after their last stop retries.
    retired: list[Runtime] = field(default_factory=list)
    runtime_errors: dict[str, int] = field(default_factory=dict)
    # Workloads whose stop() failed (e.g. the daemon was gone); retried, then reported.
    unstopped: list[Handle] = field(default_factory=list)
    gave_up: bool = False


def default_run_id(scenario: Scenario) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{scenario.name}-{stamp}-{secrets.token_hex(2)}"


def run_scenario(
    scenario_path: Path, options: RunOptions, progress: Progress | None = None
) -> RunOutcome:
    """Run a scenario file end to end and return where its results are.

    SIGINT and SIGTERM stop the run at the next safe point (see _Signals): everything
    started is stopped and removed, and the manifest ends `incomplete`.
    """
    progress = progress or QuietProgress()
    with _Signals() as signals:
        scenario = load_scenario(scenario_path)
        if options.quick:
            scenario = scenario.quickened()
        names = _runtime_names(scenario, options.runtimes)
        user = _resolve_user(scenario.user)
        scenario_sha256 = hashlib.sha256(scenario_path.read_bytes()).hexdigest()
        if options.resume is not None:
            store = ResultStore(options.resume, resume=True)
            run_id = options.resume.name
            _check_same_scenario(options.resume, scenario_sha256)
        else:
            run_id = check_run_id(options.run_id or default_run_id(scenario))
            store = ResultStore(options.results_dir / run_id)
        manifest = Manifest(
            run_id=run_id,
            status="running",
            scenario={
                "name": scenario.name,
                "path": str(scenario_path),
                "sha256": scenario_sha256,
            },
            started_at=_now(),
            bench_version=__version__,
            git_commit=git_commit(),
            sample_interval_ms=scenario.sample_interval_ms,
            sample_detail_interval_ms=scenario.sample_detail_interval_ms,
        )
        facts = host_facts()
        manifest.host = facts.as_dict()
        manifest.host_load_before = facts.load_1m
        store.write_manifest(manifest)

        run = _Run(scenario, store, manifest, progress, signals, user)
        status: RunStatus = "failed"
        # Registered as live, so a `bench gc` elsewhere leaves this run alone.
        with registered(run_id):
            try:
                status = _plan_and_execute(names, run, facts.cpus)
            except Interrupted as exc:
                status = "incomplete"
                progress.note(f"interrupted ({exc}): cleaned up; the finished trials are saved")
            finally:
                _clean_up(run, status)
    return RunOutcome(run_id, store.run_dir, status, list(store.trials), dict(run.skipped))


def _plan_and_execute(names: list[str], run: _Run, cpus: int) -> RunStatus:
    _prepare_runtimes(names, run)
    run.store.write_manifest(run.manifest)
    plan = build_plan(run.scenario, names, cpus=cpus)
    run.manifest.trials_planned = sum(len(step.trials) for step in plan)
    run.progress.planned(run.manifest.trials_planned)
    return _execute(plan, run)


def _resolve_user(user: int | str | None) -> tuple[int, int] | None:
    """The scenario's `user` as (uid, gid) on this host; a bare uid keeps gid = uid."""
    import pwd

    if user is None:
        return None
    try:
        entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        if isinstance(user, int):
            return user, user
        raise InputError(
            f"scenario user {user!r} does not exist on this host; create it, or give a uid"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _check_same_scenario(run_dir: Path, scenario_sha256: str) -> None:
    """Trial ids come from the scenario: resuming with another one would mix two plans."""
    import json

    try:
        recorded = json.loads((run_dir / "manifest.json").read_text()).get("scenario", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{run_dir}/manifest.json is unreadable ({exc}); cannot resume") from None
    if recorded.get("sha256") != scenario_sha256:
        raise InputError(
            f"{run_dir} was run with scenario {recorded.get('path')!r} "
            f"(sha256 {str(recorded.get('sha256'))[:12]}), not this file; resume it with "
            "the same scenario file, or start a new run"
        )


def _clean_up(run: _Run, status: RunStatus) -> None:
    """Stop what is left, close every runtime (private services too), write the manifest."""
    _retry_stops(run)
    for runtime in [*run.runtimes.values(), *run.retired]:
        with contextlib.suppress(Exception):
            runtime.close()
    run.store.finish()
    manifest = run.manifest
    manifest.status = status
    manifest.ended_at = _now()
    manifest.trials_done = len(run.store.trials)
    manifest.leftovers = [f"{handle.name} (pid {handle.pid})" for handle in run.unstopped]
    run.store.write_manifest(manifest)
    if run.unstopped:
        run.progress.note(
            f"warning: {len(run.unstopped)} workload(s) could not be removed "
            f"({', '.join(manifest.leftovers)}); run `bench gc` once their runtime answers again"
        )


def _runtime_names(scenario: Scenario, requested: list[str] | None) -> list[str]:
    if not requested:
        return list(scenario.runtimes)
    unknown = [name for name in requested if name not in scenario.runtimes]
    if unknown:
        raise InputError(
            f"runtime(s) {', '.join(unknown)} not in scenario {scenario.name!r}, "
            f"which lists: {', '.join(scenario.runtimes)}"
        )
    return [name for name in scenario.runtimes if name in requested]


def _prepare_runtimes(names: list[str], run: _Run) -> None:
    """Check each runtime, build and import the image; unavailable ones are skipped.

    Each runtime goes into run.runtimes before it is used, so the final clean-up closes
    it (and stops a private service it started) even when a signal arrives mid-way.
    """
    from bench.runtimes import get_runtime
    from bench.workloads import binaries

    manifest, progress = run.manifest, run.progress
    for name in names:
        run.signals.check()
        runtime = get_runtime(name)
        run.runtimes[name] = runtime
        availability = runtime.available()
        if availability.ok:
            manifest.runtimes[name] = {"available": True, "version": runtime.version()}
            left = not_of_live_runs(runtime.leftovers())
            if left:
                progress.note(
                    f"warning: {len(left)} {name} object(s) left by an earlier bench run "
                    f"({', '.join(left[:3])}{' ...' if len(left) > 3 else ''}); "
                    "`bench gc` removes them"
                )
        else:
            reason = availability.reason + (f" Fix: {availability.fix}" if availability.fix else "")
            _skip_runtime(run, name, reason)
    extra = sorted({path for w in run.scenario.workloads for path in binaries(w)})
    containers = [name for name in run.runtimes if name != "bare"]
    if containers:
        from bench.image import build_image

        progress.note("building the workload image")
        with run.signals.interruptible():  # build_image removes its staging dir on any exception
            image: WorkloadImage = build_image(extra_binaries=extra)
        manifest.image = {"digest": image.digest, "tag": image.tag, "binaries": image.binaries}
        for name in containers:
            run.signals.check()
            try:
                run.runtimes[name].prepare(image)
            except BenchError as exc:
                _skip_runtime(run, name, f"image import failed: {exc}")
    else:
        manifest.image = {"binaries": {str(p): _sha256(p) for p in extra}}


def _skip_runtime(run: _Run, name: str, reason: str) -> None:
    """Use `name` no more in this run: its remaining trials are recorded as skipped."""
    run.skipped[name] = reason
    run.manifest.runtimes[name] = {**run.manifest.runtimes.get(name, {}), "available": False}
    run.manifest.runtimes[name]["reason"] = reason
    run.progress.note(f"skipping {name}: {reason}")
    runtime = run.runtimes.pop(name, None)
    if runtime is not None:
        run.retired.append(runtime)


def _execute(plan: list[PlanStep], run: _Run) -> RunStatus:
    from bench.sampler import Sampler

    store, progress = run.store, run.progress
    done = store.done_trial_ids()
    scenario = run.scenario
    sampler = Sampler(scenario.sample_interval_ms / 1000, scenario.sample_detail_interval_ms / 1000)
    with sampler:
        for step in plan:
            run.signals.check()
            if all(t.trial_id in done for t in step.trials):
                for trial in step.trials:
                    progress.trial_finished(_existing(store, trial.trial_id))
                continue
            name = step.trials[0].runtime
            results: list[tuple[TrialResult, SampleColumns | None]]
            if name not in run.runtimes:
                results = [(_skipped(t, run.skipped.get(name, "")), None) for t in step.trials]
            else:
                for trial in step.trials:
                    progress.trial_started(trial)
                try:
                    results = _run_step(step, run, sampler)
                except Exception as exc:  # the runtime broke (daemon gone ...): the run goes on
                    reason = f"{name} failed: {_describe(exc)}"
                    results = [(_failed(t, reason), None) for t in step.trials]
                    _after_runtime_error(run, name, reason)
            for result, samples in results:
                store.add_trial(result, samples)
                progress.trial_finished(result)
            run.manifest.trials_done = len(store.trials)
            run.manifest.missed_sample_ticks = sampler.missed_ticks
            store.write_manifest(run.manifest)
    if run.gave_up:
        return "incomplete"  # `bench run --resume` runs the skipped trials once it is back
    statuses = {t.status for t in store.trials}
    return "complete" if statuses - {"skipped"} else "failed"


def _after_runtime_error(run: _Run, name: str, reason: str) -> None:
    """Go on with a runtime that still answers (podman restarts a private service that
    died); give it up for the rest of the run when it does not, or fails too often."""
    run.runtime_errors[name] = run.runtime_errors.get(name, 0) + 1
    try:
        availability = run.runtimes[name].available()
    except Exception as exc:
        availability = Availability(False, _describe(exc))
    if availability.ok and run.runtime_errors[name] < MAX_RUNTIME_ERRORS:
        _retry_stops(run)
        return
    why = availability.reason or f"{MAX_RUNTIME_ERRORS} runtime errors, the last: {reason}"
    run.gave_up = True
    _skip_runtime(run, name, f"gave up during the run: {why}")


def _retry_stops(run: _Run) -> None:
    still = []
    for handle in run.unstopped:
        try:
            handle.stop()
        except Exception:
            still.append(handle)
    run.unstopped = still


def _run_step(
    step: PlanStep, run: _Run, sampler: Sampler
) -> list[tuple[TrialResult, SampleColumns | None]]:
    """Start every trial of the step, wait for the non-aggressors, stop everything.

    A signal interrupts only the waits and the checks between starts: a runtime is never
    cut off half-way through starting or removing a container (see _Signals).
    """
    runtime = run.runtimes[step.trials[0].runtime]
    started: list[_Started] = []
    errors: dict[str, str] = {}
    finished: list[tuple[TrialResult, SampleColumns | None]] = []
    stop_seconds: dict[str, float] = {}
    idle = _footprint(runtime) if len(step.trials) > 1 else None
    try:
        for trial in step.trials:
            run.signals.check()
            try:
                started.append(_start(trial, run, runtime, sampler))
            except BenchError as exc:
                errors[trial.trial_id] = str(exc)
        deadline = time.monotonic() + run.scenario.timeout_s
        with run.signals.interruptible():
            for item in started:
                if item.trial.role != "aggressor":
                    item.exit_info = item.handle.wait(max(deadline - time.monotonic(), 0.0))
                    item.wall_s = time.monotonic() - item.t0
        for item in started:
            if item.trial.role == "aggressor":
                item.exit_info = item.handle.wait(0.0)
                item.wall_s = time.monotonic() - item.t0
        host_probe_ms = _host_probe_ms() if len(started) > 1 else None
        # Once per step, while every container of the step still exists.
        footprint = _footprint(runtime)
        finished = [_finish(item, run.store, sampler, footprint) for item in started]
        for result, _samples in finished:
            result.group_size = len(step.trials)
            result.host_probe_ms = host_probe_ms
            if idle is not None:
                result.runtime_pss_idle_bytes = idle.pss_bytes
    finally:
        for item in started:
            with contextlib.suppress(KeyError):
                sampler.remove(item.trial.trial_id)
            try:
                stop_seconds[item.trial.trial_id] = item.handle.stop()
            except Exception as exc:  # keep stopping the others; retried at the end of the run
                errors.setdefault(item.trial.trial_id, f"cleanup failed: {_describe(exc)}")
                run.unstopped.append(item.handle)
    for result, _samples in finished:
        result.stop_s = stop_seconds.get(result.trial_id)
        if result.trial_id in errors:
            result.error = "; ".join(filter(None, [result.error, errors[result.trial_id]]))
    failed = [
        (_failed(t, errors[t.trial_id]), None)
        for t in step.trials
        if t.trial_id in errors and all(r.trial_id != t.trial_id for r, _ in finished)
    ]
    return finished + failed


def _start(trial: Trial, run: _Run, runtime: Runtime, sampler: Sampler) -> _Started:
    from bench.cgroups import open_reader
    from bench.workloads import build_argv

    store = run.store
    io_dir = store.trial_dir(trial.trial_id)
    if run.user is not None:  # the workload writes its metrics and output files there
        os.chown(io_dir, *run.user)
    spec = StartSpec(
        name=_object_name(store.run_dir.name, trial.trial_id),
        argv=build_argv(trial.workload),
        io_dir=io_dir.resolve(),
        limits=trial.limits,
        oci_runtime=trial.oci_runtime or None,
        labels=(("bench", "1"), ("bench.run", store.run_dir.name[:60])),
        user=run.user,
    )
    handle = runtime.start(spec)
    try:
        reader = open_reader(handle.cgroup)
        t0 = time.monotonic()
        first = reader.read()
    except BaseException:
        handle.stop()
        raise
    sampler.add(trial.trial_id, reader, t0, first)
    return _Started(trial, handle, reader, first, t0)


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


def _finish(
    item: _Started, store: ResultStore, sampler: Sampler, footprint: Footprint | None
) -> tuple[TrialResult, SampleColumns]:
    """Read the final counters (the cgroup still exists) and build the trial's row."""
    from bench.workloads import last_lines, parse_metrics

    trial = item.trial
    columns, final = sampler.finish(trial.trial_id)
    item.reader.close()

    io_dir = store.trial_dir(trial.trial_id)
    result = TrialResult(**_identity(trial), status="ok", cgroup=item.handle.cgroup.display)  # type: ignore[arg-type]
    result.samples = len(columns)
    result.wall_s = item.wall_s
    result.start_s = item.handle.start_latency_s
    exit_info = item.exit_info
    if exit_info is not None:
        result.exit_code = exit_info.exit_code
        if exit_info.rusage_user_s is not None and exit_info.rusage_sys_s is not None:
            result.cpu_rusage_s = exit_info.rusage_user_s + exit_info.rusage_sys_s
    if final is not None:
        result.cpu_s = final.cpu_usage_ns / 1e9
        result.cpu_user_s = final.cpu_user_ns / 1e9
        result.cpu_sys_s = final.cpu_system_ns / 1e9
        result.oom_kills = final.oom_kill_count - item.first.oom_kill_count
        result.pids_peak = final.pids_peak
        result.cpu_nr_throttled = final.cpu_nr_throttled
        result.cpu_throttled_ns = final.cpu_throttled_ns
        result.io_read_bytes = final.io_read_bytes
        result.io_write_bytes = final.io_write_bytes
        result.mem_peak_bytes = final.mem_peak_bytes
    if result.mem_peak_bytes is None and len(columns):
        result.mem_peak_bytes = max(columns.values["mem_current_bytes"])
        result.mem_peak_from_samples = True
    if result.pids_peak is None and len(columns):
        result.pids_peak = max(columns.values["pids_current"])
    if footprint is not None:
        result.runtime_rss_bytes = footprint.rss_bytes
        result.runtime_pss_bytes = footprint.pss_bytes
    throughput = parse_metrics(io_dir, trial.workload)
    if throughput is not None:
        result.throughput = throughput.value
        result.throughput_unit = throughput.unit
    result.status = _status(trial, exit_info, result.oom_kills or 0)
    if result.status != "ok":
        tail = last_lines(io_dir / "stderr.txt") + last_lines(io_dir / "stdout.txt")
        result.output_tail = "\n".join(tail[-20:])
        if result.status == "timeout":
            result.error = "still running at the trial timeout; killed"
        elif result.status == "oom":
            result.error = f"{result.oom_kills} OOM kill(s) in the cgroup"
        else:
            result.error = f"exit code {result.exit_code}"
    return result, columns


def _status(trial: Trial, exit_info: ExitInfo | None, oom_kills: int) -> TrialStatus:
    # OOM is decided from the cgroup's counter: stress-ng respawns OOM-killed workers
    # and still exits 0 (docs/host-notes.md, "Limits and OOM").
    if oom_kills > 0:
        return "oom"
    if exit_info is None:
        return "ok" if trial.role == "aggressor" else "timeout"
    return "ok" if exit_info.exit_code == 0 else "failed"


def _identity(trial: Trial) -> dict[str, object]:
    return {
        "cpu_limit_cpus": trial.limits.cpus,
        "mem_limit_bytes": trial.limits.memory_bytes,
        "pids_limit": trial.limits.pids,
        "trial_id": trial.trial_id,
        "runtime": trial.runtime,
        "oci_runtime": trial.oci_runtime,
        "workload": trial.workload.name,
        "role": trial.role,
        "group_id": trial.group_id,
        "repetition": trial.repetition,
        "warmup": trial.warmup,
        "scenario_isolation_kind": trial.isolation_kind,
        "placement": trial.placement,
    }


def _failed(trial: Trial, reason: str) -> TrialResult:
    return TrialResult(**_identity(trial), status="failed", error=reason)  # type: ignore[arg-type]


def _describe(exc: BaseException) -> str:
    """An exception as one line for a trial's error column."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:500]


def _skipped(trial: Trial, reason: str) -> TrialResult:
    return TrialResult(**_identity(trial), status="skipped", error=reason)  # type: ignore[arg-type]


def _existing(store: ResultStore, trial_id: str) -> TrialResult:
    return next(t for t in store.trials if t.trial_id == trial_id)


def _object_name(run_id: str, trial_id: str) -> str:
    """Container/cgroup name: unique per run and trial, short, and prefixed for gc."""
    run_digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    trial_digest = hashlib.sha256(trial_id.encode()).hexdigest()[:6]
    return f"{NAME_PREFIX}{run_digest}-{trial_id[:4]}-{trial_digest}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class _Signals:
    """SIGINT/SIGTERM -> Interrupted, raised only at safe points.

    The handler raises at once only inside interruptible() (waiting for a workload,
    building the image); elsewhere it records the signal and check() raises it at the
    next step boundary. So a runtime is never cut off half-way through creating or
    removing a container, which is what would leave one behind. Signals after the first
    are ignored: the clean-up is already under way (SIGKILL still ends bench; `bench gc`
    then removes what is left).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._raised = False
        self._interruptible = False
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            if self._interruptible:
                self.check()

    def check(self) -> None:
        """Raise Interrupted once if a signal arrived."""
        if self.received is not None and not self._raised:
            self._raised = True
            raise Interrupted(f"received {self.received}")

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A region the signal may interrupt at any point (its code cleans up on any error)."""
        self.check()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
