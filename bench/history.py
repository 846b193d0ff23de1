"""Nightly history: per-metric series over many runs of one scenario, with change points
found (bench.changepoints) and annotated with what the manifests say changed around them.

Reads only the result store. Runs of another scenario (another sha256), runs that did not
complete, and runs missing a series' metric are listed in `History.excluded`, never mixed in.

    >>> history = load_history(["results/"])
    >>> history.points  # run_id, started_at, position, runtime, workload, metric, value [CI]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.changepoints import change_points
from bench.compare import METRICS as COMPARE_METRICS
from bench.errors import InputError
from bench.frames import load_solo_trials
from bench.results import MANIFEST, Manifest, ScenarioRef

# Metric column -> bigger is better. Latency percentiles are each repetition's own (as
# `bench compare` gates p99): a point needs one value per repetition for its interval.
METRICS: dict[str, bool] = {
    **COMPARE_METRICS,
    "stop_s": False,
    "latency_p50_s": False,
    "latency_p90_s": False,
    "latency_p999_s": False,
}
METRIC_ORDER = (
    "throughput",
    "cpu_s",
    "wall_s",
    "mem_peak_bytes",
    "start_s",
    "stop_s",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "latency_p999_s",
)
POINT_COLUMNS = [
    "run_id",
    "started_at",
    "position",
    "runtime",
    "workload",
    "metric",
    "unit",
    "value",
    "low",
    "high",
    "n",
]
# Smallest step a metric's counter resolves. Peak memory: the kernel charges memory to a
# cgroup in per-CPU batches of 64 pages (cgroup-v1 memory.rst 5.5), 256 KiB; real runs of a
# 4.7 MiB stress-ng here moved by half a batch between runs, which is no change.
RESOLUTION = {"mem_peak_bytes": 64 * 4096.0}
Z_95 = 1.959964  # a 95 % interval's half-width in standard errors


@dataclass(frozen=True)
class HistoryRun:
    """One run kept in the history, in time order."""

    run_id: str
    path: Path
    started_at: datetime
    manifest: Manifest


@dataclass(frozen=True)
class Excluded:
    """A run (or one series of it) left out, and why."""

    run_id: str
    path: str
    reason: str
    runtime: str = ""
    workload: str = ""


@dataclass(frozen=True)
class Change:
    """One recorded fact that differs between the runs either side of a change point."""

    what: str  # "bench", "runtime docker", "kernel", "cgroups", "host", ...
    before: str
    after: str


@dataclass(frozen=True)
class ChangePoint:
    """A step in one series: the first run after it, the levels either side, what changed."""

    runtime: str
    workload: str
    metric: str
    position: int  # index of the first run after the change, in History.runs
    run_id: str
    previous_run_id: str
    before: float  # median of the per-run medians from the previous change point
    after: float  # ... up to the next one
    change_pct: float
    regression: bool  # worse in the metric's direction
    changes: tuple[Change, ...]


@dataclass
class History:
    """Series of one scenario's runs: `points` (one row per run x series), change points,
    and what was left out."""

    scenario: ScenarioRef | None
    runs: list[HistoryRun]
    points: pd.DataFrame
    change_points: list[ChangePoint] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)

    def series(self) -> list[tuple[str, str, str, pd.DataFrame]]:
        """(runtime, workload, metric, its points in time order) for every series."""
        out = []
        for (workload, metric, runtime), frame in self.points.groupby(
            ["workload", "metric", "runtime"], sort=False
        ):
            out.append((str(runtime), str(workload), str(metric), frame))
        return out


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named directly, and those one level inside a folder of runs."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / MANIFEST).is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise InputError(f"{path} does not exist; pass run directories or a folder of them.")
        inside = sorted(p for p in path.iterdir() if (p / MANIFEST).is_file())
        if not inside:
            raise InputError(
                f"{path} is neither a bench run directory (no {MANIFEST}) nor a folder of them."
            )
        found += inside
    return found


def _started(manifest: Manifest) -> datetime:
    try:
        return datetime.fromisoformat(manifest.started_at)
    except ValueError:
        raise InputError(
            f"run {manifest.run_id}: started_at {manifest.started_at!r} is not an ISO time"
        ) from None


def select_runs(dirs: Sequence[Path]) -> tuple[list[HistoryRun], list[Excluded], ScenarioRef]:
    """The complete runs of the newest run's scenario in time order; every other run is
    excluded with the reason (another scenario, not complete, unreadable, given twice)."""
    loaded: list[HistoryRun] = []
    excluded: list[Excluded] = []
    for path in dirs:
        try:
            manifest = Manifest.load(path / MANIFEST)
            loaded.append(HistoryRun(manifest.run_id, path, _started(manifest), manifest))
        except InputError as exc:
            excluded.append(Excluded(path.name, str(path), f"unreadable: {exc}"))
    if not loaded:
        raise InputError("no readable run among: " + ", ".join(str(p) for p in dirs))
    loaded.sort(key=lambda r: (r.started_at, r.run_id))
    newest = loaded[-1].manifest.scenario
    kept: list[HistoryRun] = []
    seen: dict[str, Path] = {}
    for run in loaded:
        scenario = run.manifest.scenario
        if run.run_id in seen:
            reason = f"the same run id as {seen[run.run_id]}"
        elif scenario.sha256 != newest.sha256:
            reason = (
                f"another scenario: {scenario.name} (sha256 {scenario.sha256[:12]}), not "
                f"{newest.name} (sha256 {newest.sha256[:12]}) of the newest run"
            )
        elif scenario.quick != newest.quick:
            reason = f"{_plan(scenario.quick)} run, not {_plan(newest.quick)} as the newest run"
        elif run.manifest.status != "complete":
            reason = f"run status {run.manifest.status}"
        else:
            seen[run.run_id] = run.path
            kept.append(run)
            continue
        excluded.append(Excluded(run.run_id, str(run.path), reason))
    return kept, excluded, newest


def _unit(metric: str, throughput_unit: str) -> str:
    if metric == "throughput":
        return throughput_unit
    return "bytes" if metric.endswith("_bytes") else "s"


def _points(runs: Sequence[HistoryRun], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run x runtime label x workload x metric with values (CI from its reps)."""
    trials = load_solo_trials(((r.run_id, r.path) for r in runs), [*metrics, "throughput_unit"])
    position = {run.run_id: i for i, run in enumerate(runs)}
    columns = {m: trials[m].to_numpy(dtype=float, na_value=math.nan) for m in metrics}
    throughput_units: dict[tuple[str, str], str] = {}
    for label, workload, unit in zip(
        trials["label"], trials["workload"], trials["throughput_unit"], strict=True
    ):
        if unit:
            throughput_units.setdefault((str(label), str(workload)), str(unit))
    keys: list[tuple[Any, ...]] = []
    groups: list[Any] = []
    indices = trials.groupby(["run_id", "label", "workload"], sort=False).indices
    for key, rows in indices.items():
        run_id, label, workload = (str(part) for part in key)  # type: ignore[attr-defined]
        at = position[run_id]
        for metric in metrics:
            values = stats.as_array(columns[metric][rows])
            if values.size:
                unit = _unit(metric, throughput_units.get((label, workload), ""))
                keys.append((run_id, runs[at].started_at, at, label, workload, metric, unit))
                groups.append(values)
    estimates = stats.median_cis(groups)
    rows_out = [(*key, e.value, e.low, e.high, e.n) for key, e in zip(keys, estimates, strict=True)]
    points = pd.DataFrame(rows_out, columns=POINT_COLUMNS)
    return points.sort_values(["position", "workload", "runtime"], kind="stable", ignore_index=True)


def _missing(runs: Sequence[HistoryRun], points: pd.DataFrame) -> list[Excluded]:
    """A run lacking a series the other runs have: reported per run, runtime and workload."""
    out: list[Excluded] = []
    have: dict[tuple[str, str], set[str]] = {}
    present: dict[tuple[str, str, str], set[str]] = {}
    for run_id, label, workload, metric in zip(
        points["run_id"], points["runtime"], points["workload"], points["metric"], strict=True
    ):
        have.setdefault((label, workload), set()).add(metric)
        present.setdefault((run_id, label, workload), set()).add(metric)
    for run in runs:
        for (label, workload), metrics in have.items():
            got = present.get((run.run_id, label, workload), set())
            lacking = [m for m in METRIC_ORDER if m in metrics and m not in got]
            if lacking:
                out.append(
                    Excluded(
                        run.run_id,
                        str(run.path),
                        "no usable value of " + ", ".join(lacking),
                        label,
                        workload,
                    )
                )
    return out


def manifest_changes(before: Manifest, after: Manifest) -> tuple[Change, ...]:
    """Recorded facts that differ between two runs: bench version and commit, each runtime's
    version, kernel, cgroup version, host, workload image."""

    def bench_id(m: Manifest) -> str:
        return f"{m.bench_version} {(m.git_commit or '')[:12]}".strip()

    def runtime(m: Manifest, name: str) -> str:
        info = m.runtimes.get(name)
        if info is None:
            return "not in the run"
        return info.version if info.available else f"unavailable: {info.reason}"

    pairs: list[tuple[str, str, str]] = [("bench", bench_id(before), bench_id(after))]
    for name in dict.fromkeys([*before.runtimes, *after.runtimes]):
        pairs.append((f"runtime {name}", runtime(before, name), runtime(after, name)))
    hb, ha = before.host, after.host
    if hb is not None and ha is not None:
        pairs += [
            ("kernel", hb.kernel, ha.kernel),
            ("cgroups", hb.cgroup_version, ha.cgroup_version),
            ("host", hb.hostname, ha.hostname),
            ("cpu", f"{hb.cpu_model}, {hb.cpus} CPUs", f"{ha.cpu_model}, {ha.cpus} CPUs"),
            ("memory", f"{hb.memory_bytes} bytes", f"{ha.memory_bytes} bytes"),
        ]
    pairs.append(("image", before.image.digest[:19], after.image.digest[:19]))
    return tuple(Change(what, old, new) for what, old, new in pairs if old != new)


def _change_points(runs: Sequence[HistoryRun], points: pd.DataFrame) -> list[ChangePoint]:
    found: list[ChangePoint] = []
    index = {run.run_id: i for i, run in enumerate(runs)}
    for (workload, metric, runtime), frame in points.groupby(
        ["workload", "metric", "runtime"], sort=True
    ):
        frame = frame.sort_values("position")
        values = frame["value"].to_numpy(dtype=float)
        sigmas = (frame["high"] - frame["low"]).to_numpy(dtype=float) / (2 * Z_95)
        cuts = change_points(values, sigmas, resolution=RESOLUTION.get(str(metric), 0.0))
        bounds = [0, *cuts, len(values)]
        ids = frame["run_id"].tolist()
        for k, cut in enumerate(cuts):
            before = float(np.median(values[bounds[k] : cut]))
            after = float(np.median(values[cut : bounds[k + 2]]))
            pct = (after / before - 1.0) * 100.0 if before else math.nan
            worse = after < before if METRICS[str(metric)] else after > before
            first, previous = runs[index[ids[cut]]], runs[index[ids[cut - 1]]]
            found.append(
                ChangePoint(
                    runtime=str(runtime),
                    workload=str(workload),
                    metric=str(metric),
                    position=index[ids[cut]],
                    run_id=ids[cut],
                    previous_run_id=ids[cut - 1],
                    before=before,
                    after=after,
                    change_pct=pct,
                    regression=bool(worse),
                    changes=manifest_changes(previous.manifest, first.manifest),
                )
            )
    found.sort(key=lambda c: (c.position, c.workload, c.runtime, METRIC_ORDER.index(c.metric)))
    return found


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics asked for (all by default), refused with the known ones when unknown."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(
            f"unknown history metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_ORDER)}"
        )
    return list(metrics) if metrics else list(METRIC_ORDER)


def load_history(paths: Iterable[str | Path], metrics: Sequence[str] = ()) -> History:
    """The history of the newest run's scenario across `paths` (run directories or folders
    of them): per-run points with 95 % CIs, change points with what changed, exclusions."""
    chosen = check_metrics(metrics)
    runs, excluded, scenario = select_runs(find_run_dirs(paths))
    if not runs:
        raise InputError(
            f"no complete run of scenario {scenario.name} to follow; left out: "
            + "; ".join(f"{e.run_id}: {e.reason}" for e in excluded)
        )
    points = _points(runs, chosen)
    missing = _missing(runs, points)
    # A series keeps only the runs that have it: a run missing one metric of it is left out
    # of that series (reported above), never filled in.
    return History(
        scenario=scenario,
        runs=runs,
        points=points,
        change_points=_change_points(runs, points),
        excluded=excluded + missing,
    )


def _plan(quick: bool) -> str:
    return "a --quick" if quick else "a full"
