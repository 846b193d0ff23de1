"""Compare two runs (nightly CI): per runtime x workload x metric change with CI and p-value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from bench import stats
from bench.errors import InputError
from bench.fleet_store import host_runs
from bench.frames import Run, load_run, usable_solo

# metric column -> bigger is better
METRICS: dict[str, bool] = {
    "throughput": True,
    "cpu_s": False,
    "wall_s": False,
    "mem_peak_bytes": False,
    "start_s": False,
    # Service workloads: each repetition's p99 (from its own histogram), so the test has one
    # value per repetition as for throughput; trials without a client have none and skip.
    "latency_p99_s": False,
}
DEFAULT_THRESHOLD_PCT = 5.0


@dataclass(frozen=True)
class MetricChange:
    """How one metric of one runtime x workload moved from base to new."""

    runtime: str
    workload: str
    metric: str
    bigger_is_better: bool
    base_median: float
    new_median: float
    change_pct: float  # (new/base - 1) * 100
    change_low_pct: float
    change_high_pct: float
    p_value: float
    significant: bool
    regression: bool  # significant and worse by more than the threshold
    improvement: bool
    n_base: int
    n_new: int
    # Whether n_base against n_new repetitions can reach significance at all (3 against 3
    # cannot): where not, a regression cannot fail the gate, and the summary says so.
    decidable: bool = True


@dataclass(frozen=True)
class Comparison:
    """All metric changes between two runs."""

    base_run_id: str
    new_run_id: str
    threshold_pct: float
    changes: tuple[MetricChange, ...]

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.regression]

    @property
    def has_regression(self) -> bool:
        return any(c.regression for c in self.changes)

    @property
    def undecidable(self) -> list[MetricChange]:
        """Changes whose repetitions are too few for the test to call any difference."""
        return [c for c in self.changes if not c.decidable]

    def to_frame(self) -> pd.DataFrame:
        """One row per change (columns are MetricChange's fields)."""
        return pd.DataFrame([asdict(c) for c in self.changes])


def compare_runs(
    base: Run, new: Run, threshold_pct: float = DEFAULT_THRESHOLD_PCT, *, alpha: float = stats.ALPHA
) -> Comparison:
    """Compare every runtime x workload present in both runs on throughput, CPU, wall time,
    peak memory, start latency and (service workloads) p99 latency. A regression is
    significant (Mann-Whitney, alpha) and worse by more than `threshold_pct`."""
    a, b = usable_solo(base), usable_solo(new)
    changes: list[MetricChange] = []
    pairs_a = set(zip(a["label"], a["workload"], strict=True))
    keys = sorted(pairs_a & set(zip(b["label"], b["workload"], strict=True)))
    for runtime, workload in keys:
        old_group = a[(a["label"] == runtime) & (a["workload"] == workload)]
        new_group = b[(b["label"] == runtime) & (b["workload"] == workload)]
        for metric, bigger_is_better in METRICS.items():
            old_values = stats.as_array(old_group[metric].to_numpy(dtype=float, na_value=math.nan))
            new_values = stats.as_array(new_group[metric].to_numpy(dtype=float, na_value=math.nan))
            if old_values.size == 0 or new_values.size == 0:
                continue
            ratio = stats.ratio_ci(new_values, old_values)
            test = stats.differs(new_values, old_values, alpha=alpha)
            change = (ratio.value - 1.0) * 100.0
            worse = change < 0 if bigger_is_better else change > 0
            big = math.isfinite(change) and abs(change) > threshold_pct
            changes.append(
                MetricChange(
                    runtime=str(runtime),
                    workload=str(workload),
                    metric=metric,
                    bigger_is_better=bigger_is_better,
                    base_median=float(stats.median_ci(old_values, resamples=1).value),
                    new_median=float(stats.median_ci(new_values, resamples=1).value),
                    change_pct=change,
                    change_low_pct=(ratio.low - 1.0) * 100.0,
                    change_high_pct=(ratio.high - 1.0) * 100.0,
                    p_value=test.p_value,
                    significant=test.differs,
                    regression=test.differs and worse and big,
                    improvement=test.differs and not worse and big,
                    n_base=int(old_values.size),
                    n_new=int(new_values.size),
                    decidable=test.decidable,
                )
            )
    return Comparison(base.run_id, new.run_id, threshold_pct, tuple(changes))


@dataclass(frozen=True)
class FleetComparison:
    """Two fleet results compared host by host (hosts with a run in both)."""

    by_host: dict[str, Comparison]
    left_out: dict[str, str]  # host -> why it was not compared

    @property
    def has_regression(self) -> bool:
        return any(c.has_regression for c in self.by_host.values())


def compare_fleets(
    base_dir: Path, new_dir: Path, threshold_pct: float = DEFAULT_THRESHOLD_PCT
) -> FleetComparison:
    """Each host's run in `new_dir` against the same host's run in `base_dir`."""
    base = dict(host_runs(base_dir))
    new = dict(host_runs(new_dir))
    left_out = {h: f"no run in {base_dir}" for h in new if h not in base}
    left_out |= {h: f"no run in {new_dir}" for h in base if h not in new}
    common = [h for h in new if h in base]
    if not common:
        raise InputError(f"{base_dir} and {new_dir} have no host with a run in both")
    by_host = {h: compare_runs(load_run(base[h]), load_run(new[h]), threshold_pct) for h in common}
    return FleetComparison(by_host, left_out)


def _fmt(value: float, spec: str) -> str:
    return "n/a" if not math.isfinite(value) else format(value, spec)


def to_markdown(comparison: Comparison) -> str:
    """A GitHub-flavoured summary: verdict line, then regressions first, then all changes."""
    c = comparison
    regressions = c.regressions
    lines = [f"## bench compare: `{c.base_run_id}` → `{c.new_run_id}`", ""]
    if not c.changes:
        lines.append("No runtime x workload is present in both runs: nothing to compare.")
        return "\n".join(lines) + "\n"
    if regressions:
        lines.append(
            f"**{len(regressions)} regression(s)** (significant at p < {stats.ALPHA} and worse "
            f"by more than {c.threshold_pct:g} %)."
        )
    else:
        lines.append(f"No regression (threshold {c.threshold_pct:g} %, p < {stats.ALPHA}).")
    if c.undecidable:
        lines.append(
            f"{len(c.undecidable)} of {len(c.changes)} changes (marked ❔) have too few "
            f"repetitions for the test to reach p < {stats.ALPHA} at all: a regression there "
            "cannot fail this gate; run more repetitions (5 or more a side)."
        )
    lines += [
        "",
        "| | runtime | workload | metric | base | new | change % [95 % CI] | p |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    ordered = sorted(c.changes, key=lambda x: (not x.regression, not x.improvement))
    for ch in ordered:
        mark = "❌" if ch.regression else ("✅" if ch.improvement else "")
        mark = mark or ("❔" if not ch.decidable else "")
        ci = f"{_fmt(ch.change_pct, '+.1f')} [{_fmt(ch.change_low_pct, '+.1f')}, "
        ci += f"{_fmt(ch.change_high_pct, '+.1f')}]"
        lines.append(
            f"| {mark} | {ch.runtime} | {ch.workload} | {ch.metric} | "
            f"{_fmt(ch.base_median, '.4g')} | {_fmt(ch.new_median, '.4g')} | {ci} | "
            f"{_fmt(ch.p_value, '.3g')} |"
        )
    return "\n".join(lines) + "\n"
