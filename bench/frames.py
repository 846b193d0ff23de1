"""Result stores as pandas frames: `load_run`, `load_runs` and the trials every table uses.

Reads only the result store, through its schema (bench.results): the same columns and
dtypes the runner wrote, whatever version of bench wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import InputError
from bench.fleet_store import host_runs, is_fleet_dir
from bench.results import MANIFEST, SAMPLES, TRIALS, Manifest
from bench.runtimes import registry
from bench.store import read_samples, read_trials

# Cumulative counters in samples and the divisor turning d(counter)/d(t) into a unit/s rate.
COUNTERS = {
    "cpu_usage_ns": 1e9,
    "cpu_user_ns": 1e9,
    "cpu_system_ns": 1e9,
    "cpu_throttled_ns": 1e9,
    "cpu_nr_throttled": 1.0,
    "io_read_bytes": 1.0,
    "io_write_bytes": 1.0,
    "oom_kill_count": 1.0,
}
RATE_ALIASES = {
    "cpu_rate": "cpu_usage_ns",  # CPU cores in use
    "cpu_user_rate": "cpu_user_ns",
    "cpu_system_rate": "cpu_system_ns",
    "cpu_throttled_rate": "cpu_throttled_ns",
    "io_read_rate": "io_read_bytes",  # bytes/s
    "io_write_rate": "io_write_bytes",
}


@dataclass
class Run:
    """One run (or several, concatenated by `load_runs`) as pandas frames.

    `trials` gets `run_id`, `label` (runtime, plus "+oci" when one runtime ran under
    several OCI runtimes) and `usable` (not a warm-up and status ok) columns; warm-ups
    are kept, flagged by `warmup`. `manifests` holds each run's manifest by run id.
    """

    path: Path
    manifests: dict[str, Manifest]
    trials: pd.DataFrame
    samples: pd.DataFrame

    @property
    def run_id(self) -> str:
        return "+".join(self.manifests)

    @property
    def run_ids(self) -> list[str]:
        return list(self.manifests)

    @property
    def manifest(self) -> Manifest:
        """The run's manifest (of the first run, for runs loaded together)."""
        return next(iter(self.manifests.values()))


def usable_solo(run: Run) -> pd.DataFrame:
    """The trials every overhead figure is computed from (see solo_measurements)."""
    return solo_measurements(run.trials)


def solo_measurements(trials: pd.DataFrame) -> pd.DataFrame:
    """Solo trials, not warm-ups, status ok; of a multi-tier service the front's row only,
    which holds the client's numbers."""
    # A tier behind the front has no client: its row is the per-tier table's
    # (service_analysis.tier_table). Counted here, it made the overhead table fall back to
    # wall time (the trial's lifetime) with n = tiers x repetitions.
    back_tier = (trials["tier"] != "") & trials["throughput"].isna()
    return trials[trials["usable"] & (trials["role"] == "solo") & ~back_tier]


def default_baseline(labels: Iterable[str]) -> str:
    """The registry's baseline runtime as this run labels it: "bare", or "bare/host" when
    it ran on loopback as the baseline of the network paths compared."""
    base = registry.baseline()
    present = sorted(set(labels))
    if base in present:
        return base
    for label in present:
        found = registry.of_label(label)
        if found is not None and found.name == base:
            return label
    return base


def label_order(labels: Iterable[str], baseline: str | None = None) -> list[str]:
    """Runtime labels for display: the baseline (default: the registry's), then the
    registered runtimes in their order, then the rest."""
    base = default_baseline(labels) if baseline is None else baseline
    return sorted(set(labels), key=lambda label: (label != base, registry.rank(label), label))


def sweep_name(workload: pd.Series) -> pd.Series:
    """The sweep a workload belongs to: its name without the `@<rate>/s` suffix."""
    return workload.str.rsplit("@", n=1).str[0]


def workload_order(trials: pd.DataFrame) -> list[str]:
    """Workloads by name, a sweep's rates in rising order (as text 10000 sorts before 5000)."""
    if "offered_rate_per_s" not in trials.columns:  # a store written before rate sweeps
        return sorted(str(w) for w in trials["workload"].unique())
    rates = trials.groupby("workload", sort=False)["offered_rate_per_s"].first()
    keys = pd.DataFrame({"sweep": sweep_name(rates.index.to_series()), "rate": rates})
    return [str(w) for w in keys.sort_values(["sweep", "rate"], na_position="first").index]


def load_run(path: str | Path, *, samples: bool = True) -> Run:
    """Load results/<run-id>/ (manifest.json, trials.parquet, samples.parquet) into a Run.

    `samples=False` leaves the samples out (an empty frame): tables of trials need none.
    A fleet result (bench.fleet_store) gives every host's run in one Run, with a `host` column."""
    run_dir = Path(path)
    if is_fleet_dir(run_dir):
        return _load_fleet(run_dir, samples)
    manifest = Manifest.load(run_dir / MANIFEST)
    run_id = manifest.run_id
    trials_path = run_dir / TRIALS
    if not trials_path.exists():
        raise InputError(f"{trials_path} is missing; the run wrote no trials.")
    trials = _with_run_id(read_trials(trials_path), run_id)
    blank_group = trials["group_id"] == ""
    trials.loc[blank_group, "group_id"] = trials.loc[blank_group, "trial_id"]
    samples_path = run_dir / SAMPLES
    frame = (
        read_samples(samples_path)
        if samples and samples_path.exists()
        else pd.DataFrame({"trial_id": pd.Series(dtype=str), "t_s": pd.Series(dtype=float)})
    )
    frame.insert(0, "run_id", run_id)
    return Run(run_dir, {run_id: manifest}, _add_labels(trials), frame)


def load_runs(paths: Iterable[str | Path]) -> Run:
    """Load several runs into one Run: frames concatenated, told apart by `run_id`.

    Tables on the result pool repetitions of all runs; `.manifests` holds each run's manifest.
    """
    runs = [load_run(p) for p in paths]
    if not runs:
        raise InputError("load_runs needs at least one run directory.")
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise InputError(f"the same run was given twice: {', '.join(ids)}")
    trials = pd.concat([r.trials.drop(columns="label") for r in runs], ignore_index=True)
    samples = pd.concat([r.samples for r in runs], ignore_index=True)
    manifests = {r.run_id: r.manifest for r in runs}
    return Run(runs[0].path, manifests, _add_labels(trials), samples)


def _load_fleet(fleet_dir: Path, samples: bool) -> Run:
    """Every host's run of a fleet result, told apart by `host` (the inventory name)."""
    hosts = host_runs(fleet_dir)
    if not hosts:
        raise InputError(f"{fleet_dir}: no host of this fleet brought a run back")
    runs = []
    for host, run_dir in hosts:
        run = load_run(run_dir, samples=samples)
        run.trials.insert(1, "host", host)
        run.samples.insert(1, "host", host)
        runs.append(run)
    trials = pd.concat([r.trials.drop(columns="label") for r in runs], ignore_index=True)
    frame = pd.concat([r.samples for r in runs], ignore_index=True)
    manifests = {r.run_id: r.manifest for r in runs}
    return Run(fleet_dir, manifests, _add_labels(trials), frame)


# What `usable`, `label` and solo_measurements() are computed from.
_LABEL_COLUMNS = (
    "runtime", "oci_runtime", "network", "role", "warmup", "status", "tier", "throughput",
)  # fmt: skip


def load_solo_trials(runs: Iterable[tuple[str, Path]], columns: Iterable[str]) -> pd.DataFrame:
    """The usable solo trials of many runs (run id, directory) in one frame, with `label`,
    `run_id` and only `columns` besides: a year of nightly runs without their samples."""
    wanted = [*_LABEL_COLUMNS, *columns]
    frames = []
    ids = []
    for run_id, path in runs:
        trials_path = Path(path) / TRIALS
        if not trials_path.exists():
            raise InputError(f"{trials_path} is missing; the run wrote no trials.")
        frames.append(read_trials(trials_path, wanted))
        ids.append(run_id)
    if not frames:
        raise InputError("load_solo_trials needs at least one run directory.")
    # Run ids and `usable` once on the whole frame: per run they cost 2 ms each.
    trials = pd.concat(frames, ignore_index=True)
    run_ids = np.repeat(np.array(ids, dtype=object), [len(f) for f in frames])
    trials = _with_run_id(trials, run_ids)
    return _add_labels(solo_measurements(trials).reset_index(drop=True))


def _with_run_id(trials: pd.DataFrame, run_id: str | np.ndarray[Any, Any]) -> pd.DataFrame:
    trials.insert(0, "run_id", run_id)
    trials["usable"] = ~trials["warmup"].astype(bool) & (trials["status"] == "ok")
    return trials


def timeseries(run: Run, metric: str) -> pd.DataFrame:
    """Tidy samples of one metric: run_id, trial_id, runtime, workload, role, warmup, t_s, value.

    For a cumulative counter (cpu_usage_ns, io_read_bytes, ...) a `rate` column holds its
    per-second derivative (ns counters give CPU cores). Rate aliases (`cpu_rate`,
    `io_read_rate`, ...) return that rate as `value`. Samples that did not read it are left out.
    """
    column = RATE_ALIASES.get(metric, metric)
    samples = run.samples
    if column not in samples.columns:
        available = sorted(set(samples.columns) - {"run_id", "trial_id", "t_s"})
        raise InputError(
            f"no metric {metric!r} in the samples of {run.run_id}; available: "
            f"{', '.join(available + sorted(RATE_ALIASES))}"
        )
    tidy = samples[["run_id", "trial_id", "t_s", column]].sort_values(["run_id", "trial_id", "t_s"])
    # Detail metrics are read every sample_detail_interval_ms only: rows where this one was
    # not read carry <NA> and drop out, so rates span the ticks that did read it.
    tidy = tidy[tidy[column].notna()].rename(columns={column: "value"})
    if column in COUNTERS:
        grouped = tidy.groupby(["run_id", "trial_id"], sort=False)
        d_value = grouped["value"].diff().astype(float)
        d_t = grouped["t_s"].diff().astype(float)
        rate = d_value / d_t / COUNTERS[column]
        # A negative step is a counter reset (new cgroup), a zero dt a duplicate sample.
        tidy["rate"] = rate.where((d_value >= 0) & (d_t > 0))
        if metric in RATE_ALIASES:
            tidy["value"] = tidy.pop("rate")
    info = run.trials[["run_id", "trial_id", "label", "workload", "role", "warmup"]]
    tidy = tidy.merge(info, on=["run_id", "trial_id"], how="left")
    tidy = tidy.rename(columns={"label": "runtime"})
    front = ["run_id", "trial_id", "runtime", "workload", "role", "warmup", "t_s", "value"]
    return tidy[front + [c for c in tidy.columns if c not in front]].reset_index(drop=True)


def _add_labels(trials: pd.DataFrame) -> pd.DataFrame:
    variants = trials.groupby("runtime")["oci_runtime"].nunique()
    several = set(variants[variants > 1].index)
    label = trials["runtime"].copy()
    mask = trials["runtime"].isin(several) & (trials["oci_runtime"] != "")
    label[mask] = trials.loc[mask, "runtime"] + "+" + trials.loc[mask, "oci_runtime"]
    # The network path as in "docker/published"; "none" (no network axis) adds nothing.
    networked = trials["network"] != "none"
    label[networked] = label[networked] + "/" + trials.loc[networked, "network"]
    trials["label"] = label
    return trials
