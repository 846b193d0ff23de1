"""report.json, plus exports for pytest-benchmark and github-action-benchmark.

pytest-benchmark's schema (its stats.Stats and plugin.pytest_benchmark_generate_json):
{machine_info, commit_info, benchmarks: [{group, name, fullname, params, param, extra_info,
options, stats: {min, max, mean, stddev, rounds, median, iqr, q1, q3, iqr_outliers,
stddev_outliers, outliers, ld15iqr, hd15iqr, ops, total, data, iterations}}], datetime,
version}. Its values are seconds per round, smaller is better: we export wall, CPU, start
and stop seconds, one round per repetition. github-action-benchmark takes a list of
{name, unit, value, range, extra} per direction.
"""

from __future__ import annotations

import bisect
import json
import math
import platform
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench import __version__, analysis, stats
from bench.frames import usable_solo

if TYPE_CHECKING:
    from bench.report import RunSummary

PYTEST_BENCHMARK_VERSION = "5.1.0"  # the schema version we emulate
# Seconds-valued columns exported to pytest-benchmark (its unit is time per round).
PB_METRICS = ("wall_s", "cpu_s", "start_s", "stop_s")
SMALLER_IS_BETTER = {
    "wall_s": ("s", 1.0),
    "cpu_s": ("s", 1.0),
    "mem_peak_bytes": ("MiB", 1.0 / (1 << 20)),
    "start_s": ("ms", 1e3),
    "stop_s": ("ms", 1e3),
}


def jsonable(value: Any) -> Any:
    """Recursively turn numpy/pandas values into JSON ones; NaN/NA become null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str | Path):
        return str(value)
    return str(value)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [jsonable(r) for r in frame.astype(object).to_dict(orient="records")]


def report_dict(summaries: list[RunSummary]) -> dict[str, Any]:
    """report.json: manifest and every table of every run."""
    return {
        "bench_version": __version__,
        "runs": [
            {
                "run_id": s.run.run_id,
                "manifest": jsonable(asdict(s.run.manifest)),
                "overhead": _records(s.overhead),
                "isolation": _records(s.isolation),
                "startup": _records(s.startup),
                "footprint": _records(s.footprint),
                "services": _records(s.services),
                "tiers": _records(s.tiers),
                "warnings": [jsonable(asdict(w)) for w in s.warnings],
            }
            for s in summaries
        ],
    }


def _quartiles(data: list[float]) -> tuple[float, float]:
    """q1, q3 exactly as pytest-benchmark computes them (so `compare` shows the same)."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2:
        k, q = n // 4, n % 4
        if q == 1:
            q1 = 0.25 * data[k - 1] + 0.75 * data[k]
            q3 = 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        else:
            q1 = 0.75 * data[k] + 0.25 * data[k + 1]
            q3 = 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
        return q1, q3
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2 :])


def pytest_benchmark_stats(values: list[float]) -> dict[str, Any]:
    """pytest-benchmark's stats block for one benchmark (one round per value)."""
    data = sorted(values)
    n = len(data)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if n > 1 else 0.0
    q1, q3 = _quartiles(data)
    iqr = q3 - q1
    low_fence, high_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_out = sum(1 for v in data if v < low_fence or v > high_fence)
    sd_out = sum(1 for v in data if v < mean - stddev or v > mean + stddev)
    total = sum(data)
    return {
        "min": data[0],
        "max": data[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": n,
        "median": statistics.median(data),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_out,
        "stddev_outliers": sd_out,
        "outliers": f"{sd_out};{iqr_out}",
        "ld15iqr": data[0] if n == 1 else data[bisect.bisect_left(data, low_fence)],
        "hd15iqr": data[0] if n == 1 else data[bisect.bisect_right(data, high_fence) - 1],
        "ops": n / total if total else 0,
        "total": total,
        "data": list(values),
        "iterations": 1,
    }


def _solo_groups(run: analysis.Run) -> list[tuple[str, str, pd.DataFrame]]:
    solo = usable_solo(run)
    return [(str(k[0]), str(k[1]), g) for k, g in solo.groupby(["label", "workload"], sort=True)]


def to_pytest_benchmark(run: analysis.Run) -> dict[str, Any]:
    """A pytest-benchmark JSON document: `pytest-benchmark compare FILE...` reads it."""
    m = run.manifest
    host = m.host
    benchmarks = []
    for runtime, workload, group in _solo_groups(run):
        throughput = stats.median_ci(analysis.metric_values(group, "throughput"), resamples=1).value
        for metric in PB_METRICS:
            values = [float(v) for v in analysis.metric_values(group, metric)]
            if not values:
                continue
            name = f"{metric}[{runtime}-{workload}]"
            benchmarks.append(
                {
                    "group": f"{workload} {metric}",
                    "name": name,
                    "fullname": f"bench/{m.scenario.name}::{name}",
                    "params": {"runtime": runtime, "workload": workload},
                    "param": f"{runtime}-{workload}",
                    "extra_info": jsonable(
                        {"run_id": run.run_id, "metric": metric, "throughput_median": throughput}
                    ),
                    "options": {},
                    "stats": pytest_benchmark_stats(values),
                }
            )
    return {
        "machine_info": {
            "node": host.hostname if host else "",
            "processor": platform.processor(),
            "machine": platform.machine(),
            "python_compiler": platform.python_compiler(),
            "python_implementation": platform.python_implementation(),
            "python_implementation_version": platform.python_version(),
            "python_version": platform.python_version(),
            "python_build": list(platform.python_build()),
            "release": host.kernel if host else "",
            "system": "Linux",
            "cpu": {
                "brand_raw": host.cpu_model if host else "",
                "count": host.cpus if host else None,
            },
        },
        "commit_info": {
            "id": m.git_commit or "",
            "time": m.started_at,
            "author_time": m.started_at,
            "dirty": False,
            "project": "bench",
            "branch": "",
        },
        "benchmarks": benchmarks,
        "datetime": m.started_at,
        "version": PYTEST_BENCHMARK_VERSION,
    }


def to_github_action_benchmark(
    run: analysis.Run,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(customBiggerIsBetter, customSmallerIsBetter) entries for github-action-benchmark."""
    bigger: list[dict[str, Any]] = []
    smaller: list[dict[str, Any]] = []

    def entry(name: str, unit: str, values: Any, scale: float) -> dict[str, Any] | None:
        est = stats.median_ci(values)
        if not math.isfinite(est.value):
            return None
        half = (est.high - est.low) / 2 * scale
        return {
            "name": name,
            "unit": unit,
            "value": est.value * scale,
            "range": f"± {half:.4g}",
            "extra": f"median of {est.n}, 95% CI [{est.low * scale:.4g}, "
            f"{est.high * scale:.4g}], run {run.run_id}",
        }

    for runtime, workload, group in _solo_groups(run):
        unit = str(group["throughput_unit"].iloc[0]) or "ops/s"
        item = entry(f"{runtime}/{workload} throughput", unit, group["throughput"], 1.0)
        if item:
            bigger.append(item)
        for metric, (unit, scale) in SMALLER_IS_BETTER.items():
            item = entry(f"{runtime}/{workload} {metric}", unit, group[metric], scale)
            if item:
                smaller.append(item)
    return bigger, smaller


def _dump(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_json(summaries: list[RunSummary], out_dir: Path) -> list[Path]:
    """report.json and, per run, pytest-benchmark and github-action-benchmark exports."""
    written = [_dump(out_dir / "report.json", report_dict(summaries))]
    for s in summaries:
        rid = s.run.run_id
        written.append(_dump(out_dir / f"pytest-benchmark-{rid}.json", to_pytest_benchmark(s.run)))
        bigger, smaller = to_github_action_benchmark(s.run)
        written.append(_dump(out_dir / f"github-action-benchmark-bigger-{rid}.json", bigger))
        written.append(_dump(out_dir / f"github-action-benchmark-smaller-{rid}.json", smaller))
    return written
