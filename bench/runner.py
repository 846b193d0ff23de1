"""Executes a plan: start, sample, stop, always clean up, persist after every trial."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench import __version__
from bench.cgroups.locate import host_cgroup_version
from bench.errors import InputError
from bench.gc import registered
from bench.host import git_commit, host_facts, resolve_user
from bench.plan import PlanStep, build_plan
from bench.preflight import check_scenario
from bench.prepare import Progress, QuietProgress, RunState, prepare_runtimes, skip_runtime
from bench.results import (
    MANIFEST,
    Manifest,
    RunStatus,
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
    from bench.sampler import Sampler

# Runtime errors (not workload failures) after which a runtime is given up for the run.
MAX_RUNTIME_ERRORS = 3


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

        run = RunState(scenario, store, manifest, progress, signals, user)
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


def _plan_and_execute(names: list[str], run: RunState, cpus: int) -> RunStatus:
    prepare_runtimes(names, run)
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


def _clean_up(run: RunState, status: RunStatus) -> None:
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


def _execute(plan: list[PlanStep], run: RunState) -> RunStatus:
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


def _step_results(step: PlanStep, run: RunState, sampler: Sampler) -> StepResults:
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


def _after_runtime_error(run: RunState, name: str, reason: str) -> None:
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
    skip_runtime(run, name, f"gave up during the run: {why}")


def _retry_stops(run: RunState) -> None:
    still = []
    for handle in run.unstopped:
        try:
            handle.stop()
        except Exception:
            still.append(handle)
    run.unstopped[:] = still  # in place: the current step's context holds this list


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
