"""Executes a plan: start, sample, stop, always clean up, persist after every trial."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from bench import __version__
from bench.cgroups.locate import host_cgroup_version
from bench.errors import BenchError, InputError
from bench.gc import not_of_live_runs, registered
from bench.host import git_commit, host_facts, resolve_user
from bench.plan import PlanStep, Trial, build_plan
from bench.preflight import check_scenario
from bench.results import (
    MANIFEST,
    ImageEntry,
    Manifest,
    RunStatus,
    RuntimeEntry,
    ScenarioRef,
    TrialResult,
    check_run_id,
)
from bench.runtimes.base import Availability
from bench.scenario import Scenario
from bench.scenario_load import load_scenario
from bench.service import check_installed, discard_services, prepare_services
from bench.signals import Interrupted, Signals
from bench.step import StepContext, StepResults, describe, run_step
from bench.store import ResultStore
from bench.trial import run_verdict, trial_row

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.runtimes.base import Handle, OciAxisRuntime, Runtime
    from bench.sampler import Sampler

log = logging.getLogger("bench")

# Runtime errors (not workload failures) after which a runtime is given up for the run.
MAX_RUNTIME_ERRORS = 3


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
    # Why the run failed, when it did (the CLI says it after the summary).
    failure: str = ""


@dataclass
class _Run:
    """What every step of one run shares."""

    scenario: Scenario
    store: ResultStore
    manifest: Manifest
    progress: Progress
    signals: Signals
    user: tuple[int, int] | None
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # (runtime, OCI runtime) pairs of the scenario's axis that cannot run here, and why.
    skipped_oci: dict[tuple[str, str], str] = field(default_factory=dict)
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

    SIGINT and SIGTERM stop the run at the next safe point (see bench.signals): everything
    started is stopped and removed, and the manifest ends `incomplete`.
    """
    progress = progress or QuietProgress()
    with Signals() as signals:
        scenario = load_scenario(scenario_path)
        if options.quick:
            scenario = scenario.quickened()
        # Before anything is written.
        check_scenario(scenario, scenario_path, requested=options.runtimes or ())
        names = _runtime_names(scenario, options.runtimes)
        user = resolve_user(scenario.user)
        check_installed(scenario)
        scenario_sha256 = hashlib.sha256(scenario_path.read_bytes()).hexdigest()
        if options.resume is not None:
            store = ResultStore(options.resume, resume=True)
            run_id = options.resume.name
            _check_same_scenario(options.resume, scenario_sha256, options.quick)
        else:
            run_id = check_run_id(options.run_id or default_run_id(scenario))
            store = ResultStore(options.results_dir / run_id)
        manifest = Manifest(
            run_id=run_id,
            status="running",
            scenario=ScenarioRef(scenario.name, str(scenario_path), scenario_sha256, options.quick),
            started_at=_now(),
            bench_version=__version__,
            git_commit=git_commit(),
            sample_interval_ms=scenario.sample_interval_ms,
            sample_detail_interval_ms=scenario.sample_detail_interval_ms,
        )
        facts = host_facts()
        manifest.host = facts
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
    return RunOutcome(
        run_id, store.run_dir, status, list(store.trials), dict(run.skipped), manifest.failure
    )


def _plan_and_execute(names: list[str], run: _Run, cpus: int) -> RunStatus:
    _prepare_runtimes(names, run)
    prepare_services(run.scenario, run.store.run_dir, run.user)
    run.store.write_manifest(run.manifest)
    plan = build_plan(run.scenario, names, cpus=cpus, cgroup_version=host_cgroup_version())
    run.manifest.trials_planned = sum(len(step.trials) for step in plan)
    run.progress.planned(run.manifest.trials_planned)
    return _execute(plan, run)


def _check_same_scenario(run_dir: Path, scenario_sha256: str, quick: bool) -> None:
    """Trial ids come from the scenario: resuming with another one would mix two plans."""
    recorded = Manifest.load(run_dir / MANIFEST).scenario
    if recorded.sha256 != scenario_sha256:
        raise InputError(
            f"{run_dir} was run with scenario {recorded.path!r} "
            f"(sha256 {recorded.sha256[:12]}), not this file; resume it with "
            "the same scenario file, or start a new run"
        )
    if recorded.quick != quick:
        flag = "with --quick" if recorded.quick else "without --quick"
        raise InputError(f"{run_dir} was run {flag}; resume it {flag}, or start a new run")


def _clean_up(run: _Run, status: RunStatus) -> None:
    """Stop what is left, close every runtime (private services too), write the manifest."""
    _retry_stops(run)
    for runtime in [*run.runtimes.values(), *run.retired]:
        with contextlib.suppress(Exception):
            runtime.close()
    discard_services(run.store.run_dir)
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
    from bench.runtimes import get_runtime, registry
    from bench.workloads import binaries, data_paths

    manifest, progress = run.manifest, run.progress
    for name in names:
        run.signals.check()
        runtime = get_runtime(name)
        run.runtimes[name] = runtime
        availability = runtime.available()
        if availability.ok:
            manifest.runtimes[name] = RuntimeEntry(
                available=True, version=runtime.version(), oci_runtimes=_oci_axis(name, run)
            )
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
    data = sorted({path for w in run.scenario.workloads for path in data_paths(w)})
    containers = [n for n in run.runtimes if registry.entry(n).capabilities.needs_image]
    if containers:
        from bench.image import build_image

        progress.note("building the workload image")
        with run.signals.interruptible():  # build_image removes its staging dir on any exception
            image: WorkloadImage = build_image(extra_binaries=extra, data_paths=data)
        manifest.image = ImageEntry(image.digest, image.tag, image.binaries)
        for name in containers:
            run.signals.check()
            try:
                run.runtimes[name].prepare(image)
            except BenchError as exc:
                _skip_runtime(run, name, f"image import failed: {exc}")
    else:
        manifest.image = ImageEntry(binaries={str(p): _sha256(p) for p in extra})


def _oci_axis(name: str, run: _Run) -> dict[str, str]:
    """Check each OCI runtime of the scenario under engine `name`: its version for the
    manifest, or the reason its trials are skipped (recorded in run.skipped_oci)."""
    from bench.runtimes import registry

    if not registry.entry(name).capabilities.oci_runtime_axis:
        return {}
    engine = cast("OciAxisRuntime", run.runtimes[name])
    described: dict[str, str] = {}
    for oci in run.scenario.oci_runtimes:
        availability = engine.oci_runtime_available(oci)
        if availability.ok:
            described[oci] = engine.oci_runtime_version(oci)
            continue
        reason = availability.reason + (f" Fix: {availability.fix}" if availability.fix else "")
        run.skipped_oci[(name, oci)] = reason
        described[oci] = f"skipped: {reason}"
        run.progress.note(f"skipping {name}+{oci}: {reason}")
    return described


def _skip_runtime(run: _Run, name: str, reason: str) -> None:
    """Use `name` no more in this run: its remaining trials are recorded as skipped."""
    run.skipped[name] = reason
    known = run.manifest.runtimes.get(name)
    run.manifest.runtimes[name] = RuntimeEntry(False, known.version if known else "", reason)
    run.progress.note(f"skipping {name}: {reason}")
    runtime = run.runtimes.pop(name, None)
    if runtime is not None:
        run.retired.append(runtime)


def _execute(plan: list[PlanStep], run: _Run) -> RunStatus:
    from bench.sampler import Sampler

    store, progress = run.store, run.progress
    done = store.done_trial_ids()
    earlier = {t.trial_id: t for t in store.trials}
    scenario = run.scenario
    sampler = Sampler(scenario.sample_interval_ms / 1000, scenario.sample_detail_interval_ms / 1000)
    with sampler:
        for step in plan:
            run.signals.check()
            if all(t.trial_id in done for t in step.trials):
                for trial in step.trials:
                    progress.trial_finished(earlier[trial.trial_id])
                continue
            for result, samples in _step_results(step, run, sampler):
                store.add_trial(result, samples)
                progress.trial_finished(result)
            run.manifest.trials_done = len(store.trials)
            run.manifest.missed_sample_ticks = sampler.missed_ticks
            store.write_manifest(run.manifest)
    status, run.manifest.failure = run_verdict(store.trials, run.gave_up)
    return status  # the CLI says the failure last, after the summary


def _step_results(step: PlanStep, run: _Run, sampler: Sampler) -> StepResults:
    """Run one step, or record it as skipped when its runtime is out of the run."""
    name = step.trials[0].runtime
    if name not in run.runtimes:
        return [(trial_row(t, "skipped", run.skipped.get(name, "")), None) for t in step.trials]
    if any(t.skip_reason for t in step.trials):  # e.g. a network mode the runtime lacks
        return [(trial_row(t, "skipped", t.skip_reason), None) for t in step.trials]
    oci_reason = run.skipped_oci.get((name, step.trials[0].oci_runtime))
    if oci_reason is not None:
        return [(trial_row(t, "skipped", oci_reason), None) for t in step.trials]
    for trial in step.trials:
        run.progress.trial_started(trial)
    ctx = StepContext(
        run.store, sampler, run.signals, run.scenario.timeout_s, run.user, run.unstopped
    )
    try:
        return run_step(step, run.runtimes[name], ctx)
    except Exception as exc:  # the runtime broke (daemon gone ...): the run goes on
        reason = f"{name} failed: {describe(exc)}"
        failed: StepResults = [(trial_row(t, "failed", reason), None) for t in step.trials]
        _after_runtime_error(run, name, reason)
        return failed


def _after_runtime_error(run: _Run, name: str, reason: str) -> None:
    """Go on with a runtime that still answers (podman restarts a private service that
    died); give it up for the rest of the run when it does not, or fails too often."""
    run.runtime_errors[name] = run.runtime_errors.get(name, 0) + 1
    try:
        availability = run.runtimes[name].available()
    except Exception as exc:
        availability = Availability(False, describe(exc))
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
    run.unstopped[:] = still  # in place: the current step's context holds this list


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
