"""A trial's row in the results: built from what its step observed, its status decided."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cgroups.model import CgroupSnapshot, cgroup_totals
from bench.results import RunStatus, TrialResult, TrialStatus

if TYPE_CHECKING:
    from bench.footprint import Footprint
    from bench.plan import Trial
    from bench.runtimes.base import ExitInfo
    from bench.sampler import SampleColumns

# How many distinct errors the verdict on a failed run quotes.
QUOTED_ERRORS = 3


@dataclass(frozen=True)
class Observed:
    """What the step saw of one started trial, up to its cgroup's final read."""

    cgroup: str
    start_s: float
    boot_s: float | None
    wall_s: float | None
    exit_info: ExitInfo | None
    first: CgroupSnapshot
    final: CgroupSnapshot | None
    columns: SampleColumns
    footprint: Footprint | None


def trial_row(trial: Trial, status: TrialStatus, error: str = "", cgroup: str = "") -> TrialResult:
    """A row holding the trial's identity (what the plan decided) and its status."""
    return TrialResult(
        trial_id=trial.trial_id,
        runtime=trial.runtime,
        oci_runtime=trial.oci_runtime,
        workload=trial_workload_name(trial),
        role=trial.role,
        group_id=trial.group_id,
        repetition=trial.repetition,
        warmup=trial.warmup,
        status=status,
        cpu_limit_cpus=trial.limits.cpus,
        mem_limit_bytes=trial.limits.memory_bytes,
        pids_limit=trial.limits.pids,
        cgroup=cgroup,
        scenario_isolation_kind=trial.isolation_kind,
        placement=trial.placement,
        network=trial.network,
        tier=trial.tier,
        error=error,
    )


def trial_workload_name(trial: Trial) -> str:
    """The workload's name; a rate sweep's trials add their offered rate ("tcp-rr@5000/s"),
    so that each rate is compared on its own."""
    rate = trial.offered_rate_per_s
    return trial.workload.name if rate is None else f"{trial.workload.name}@{rate:g}/s"


def measured_row(trial: Trial, seen: Observed, io_dir: Path) -> TrialResult:
    """The row of a trial that started: its totals, exit, throughput and status."""
    from bench.workloads import last_lines, parse_metrics

    result = trial_row(trial, "ok", cgroup=seen.cgroup)
    result.samples = len(seen.columns)
    result.wall_s = seen.wall_s
    result.start_s = seen.start_s
    result.boot_s = seen.boot_s
    if seen.exit_info is not None:
        result.exit_code = seen.exit_info.exit_code
        user_s, sys_s = seen.exit_info.rusage_user_s, seen.exit_info.rusage_sys_s
        if user_s is not None and sys_s is not None:
            result.cpu_rusage_s = user_s + sys_s
    totals = cgroup_totals(
        seen.first,
        seen.final,
        sampled_mem_max_bytes=seen.columns.largest("mem_current_bytes"),
        sampled_pids_max=seen.columns.largest("pids_current"),
    )
    # CgroupTotals is named in TrialResult's columns (a unit test holds them together).
    for column in fields(totals):
        setattr(result, column.name, getattr(totals, column.name))
    if seen.footprint is not None:
        result.runtime_rss_bytes = seen.footprint.rss_bytes
        result.runtime_pss_bytes = seen.footprint.pss_bytes
    throughput = parse_metrics(io_dir, trial.workload)
    if throughput is not None:
        result.throughput = throughput.value
        result.throughput_unit = throughput.unit
    result.status = trial_status(trial, seen.exit_info, result.oom_kills or 0)
    if result.status != "ok":
        tail = last_lines(io_dir / "stderr.txt") + last_lines(io_dir / "stdout.txt")
        result.output_tail = "\n".join(tail[-20:])
        result.error = _status_error(result)
    return result


def trial_status(trial: Trial, exit_info: ExitInfo | None, oom_kills: int) -> TrialStatus:
    """ok, oom, timeout or failed; an aggressor still running at the end is ok."""
    # OOM is decided from the cgroup's counter: stress-ng respawns OOM-killed workers
    # and still exits 0 (docs/host-notes.md, "Limits and OOM").
    if oom_kills > 0:
        return "oom"
    if exit_info is None:  # still running: an aggressor or a server is stopped by bench
        return "ok" if trial.role == "aggressor" or trial.workload.service else "timeout"
    return "ok" if exit_info.exit_code == 0 else "failed"


def _status_error(result: TrialResult) -> str:
    if result.status == "timeout":
        return "still running at the trial timeout; killed"
    if result.status == "oom":
        return f"{result.oom_kills} OOM kill(s) in the cgroup"
    return f"exit code {result.exit_code}"


def is_measurement(result: TrialResult) -> bool:
    """Whether the workload ran to an outcome of its own: ok, oom, timeout, or an exit code.

    A workload that fails on its own is a measurement; a trial that bench or the host
    could not run (skipped, start or runtime failed: no exit code) is not.
    """
    if result.status == "failed":
        return result.exit_code is not None
    return result.status != "skipped"


def run_verdict(trials: list[TrialResult], gave_up: bool) -> tuple[RunStatus, str]:
    """How a run that went to its end ended, and, when it failed, what failed."""
    if gave_up:
        return "incomplete", ""  # `bench run --resume` runs the skipped trials once it is back
    measured = [t for t in trials if not t.warmup]
    if any(is_measurement(t) for t in measured):
        return "complete", ""
    if not measured:
        return "failed", "the plan holds no measured trial"
    errors = list(dict.fromkeys(t.error or t.status for t in measured))
    quoted = "; ".join(errors[:QUOTED_ERRORS])
    more = f" (and {len(errors) - QUOTED_ERRORS} more)" if len(errors) > QUOTED_ERRORS else ""
    return "failed", f"none of the {len(measured)} measured trial(s) ran: {quoted}{more}"
