"""A run's shared state, and its preparation before the first trial: each runtime checked,
the workload image built and imported; what cannot run is skipped with its reason."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from bench.errors import BenchError
from bench.gc import not_of_live_runs
from bench.results import ImageEntry, Manifest, RuntimeEntry

if TYPE_CHECKING:
    from pathlib import Path

    from bench.image import WorkloadImage
    from bench.plan import Trial
    from bench.results import TrialResult
    from bench.runtimes.base import Handle, OciAxisRuntime, Runtime
    from bench.scenario import Scenario
    from bench.signals import Signals
    from bench.store import ResultStore

log = logging.getLogger("bench")


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
class RunState:
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


def prepare_runtimes(names: list[str], run: RunState) -> None:
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
            skip_runtime(run, name, reason)
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
                skip_runtime(run, name, f"image import failed: {exc}")
    else:
        manifest.image = ImageEntry(binaries={str(p): _sha256(p) for p in extra})


def _oci_axis(name: str, run: RunState) -> dict[str, str]:
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


def skip_runtime(run: RunState, name: str, reason: str) -> None:
    """Use `name` no more in this run: its remaining trials are recorded as skipped."""
    run.skipped[name] = reason
    known = run.manifest.runtimes.get(name)
    run.manifest.runtimes[name] = RuntimeEntry(False, known.version if known else "", reason)
    run.progress.note(f"skipping {name}: {reason}")
    runtime = run.runtimes.pop(name, None)
    if runtime is not None:
        run.retired.append(runtime)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
