"""The run report's plots as inline SVG (matplotlib's object API, no pyplot).

Timeseries are downsampled to MAX_POINTS per line so an hour of 10 Hz samples stays small;
every runtime keeps its registry colour in every plot.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterable
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench import analysis
from bench.frames import sweep_name
from bench.runtimes import registry
from bench.service_analysis import PERCENTILE_COLUMNS

MAX_POINTS = 400
RC: dict[Any, Any] = {
    "svg.fonttype": "none",  # text as <text>, not glyph paths: far smaller files
    "svg.hashsalt": "bench",  # stable ids so reports of the same data are identical
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# None drops each key, and with it the whole RDF <metadata> block (about 0.5 kB per plot).
SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
UNKNOWN_COLOUR = "#9467bd"  # a runtime the registry does not know (an older run's)


def runtime_colour(label: str) -> str:
    """A runtime label's colour in every plot: the registry's, or one for an unknown runtime."""
    known = registry.of_label(label)
    return UNKNOWN_COLOUR if known is None else known.colour


def svg(fig: Figure, *, tight: bool = True) -> str:
    """The figure as inline SVG; `tight` crops it to its contents (not for many panels:
    that lays every text out twice, 1.2 of 3.5 s for a year's 48 history panels)."""
    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(
            buf, format="svg", bbox_inches="tight" if tight else None, metadata=SVG_METADATA
        )
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML declaration and DOCTYPE


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Any]]:
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height))
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def downsample(
    t: np.ndarray[Any, Any], v: np.ndarray[Any, Any], how: str = "mean"
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """At most MAX_POINTS points: bin means (or maxima, for memory peaks) of equal runs."""
    n = t.size
    if n <= MAX_POINTS:
        return t, v
    step = math.ceil(n / MAX_POINTS)
    starts = np.arange(0, n, step)
    v = np.nan_to_num(v.astype(float), nan=0.0)
    counts = np.diff(np.append(starts, n))
    if how == "max":
        return t[starts], np.maximum.reduceat(v, starts)
    return t[starts], np.add.reduceat(v, starts) / counts


def overhead_plot(table: pd.DataFrame, baseline: str) -> str | None:
    """Ratio to the baseline per runtime with CI whiskers, one panel per workload."""
    table = table[np.isfinite(table["ratio"].astype(float))]
    if table.empty:
        return None
    workloads = list(dict.fromkeys(table["workload"]))
    fig, axes = _figure(min(4.2 * len(workloads), 14), 3.0, len(workloads))
    for ax, workload in zip(axes, workloads, strict=True):
        t = table[table["workload"] == workload]
        x = np.arange(len(t))
        ratio = t["ratio"].to_numpy(float)
        err = np.vstack(
            [ratio - t["ratio_low"].to_numpy(float), t["ratio_high"].to_numpy(float) - ratio]
        )
        ax.bar(
            x,
            ratio,
            color=[runtime_colour(r) for r in t["runtime"]],
            yerr=np.nan_to_num(err),
            capsize=3,
        )
        ax.axhline(1.0, color="#888", lw=0.8, ls="--")
        ax.set_xticks(x, list(t["runtime"]), rotation=30)
        metric = str(t["metric"].iloc[0])
        better = "higher" if metric == "throughput" else "lower"
        # Two lines: side-by-side panels must not run their titles into each other.
        ax.set_title(f"{workload}: {metric} vs {baseline}\n({better} is better)", fontsize=9)
        ax.set_ylabel(f"{metric} ratio to {baseline} (x)")
        low = float(np.nanmin(t["ratio_low"].to_numpy(float), initial=1.0))
        ax.set_ylim(max(0.0, min(0.8, low - 0.05)), None)
    return svg(fig)


def isolation_plot(table: pd.DataFrame) -> str | None:
    """Victim loss % vs its solo baseline, per runtime x aggressor kind x placement."""
    table = table[np.isfinite(table["degradation_pct"].astype(float))]
    if table.empty:
        return None
    labels = [f"{r.runtime}\n{r.kind}/{r.placement}" for r in table.itertuples()]
    fig, (ax,) = _figure(min(0.8 * len(table) + 2, 12), 3.0)
    x = np.arange(len(table))
    deg = table["degradation_pct"].to_numpy(float)
    err = np.vstack(
        [
            deg - table["degradation_low_pct"].to_numpy(float),
            table["degradation_high_pct"].to_numpy(float) - deg,
        ]
    )
    colors = [
        "#b00020" if h else runtime_colour(str(r))
        for r, h in zip(table["runtime"], table["victim_harmed"], strict=True)
    ]
    ax.bar(x, deg, color=colors, yerr=np.nan_to_num(err), capsize=3)
    ax.axhline(0.0, color="#888", lw=0.8)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("victim loss %")
    ax.set_title("Isolation: victim degradation (red = harmed)")
    return svg(fig)


def latency_plot(run: analysis.Run) -> str | None:
    """Start and stop latency distributions per runtime (box + points)."""
    solo = analysis.usable_solo(run)
    labels = analysis.label_order(solo["label"].unique())
    if not labels or solo["start_s"].isna().all():
        return None
    fig, axes = _figure(9, 2.8, 2)
    for ax, column, title in zip(axes, ("start_s", "stop_s"), ("start", "stop"), strict=True):
        data = [analysis.metric_values(solo[solo["label"] == lab], column) * 1e3 for lab in labels]
        keep = [i for i, d in enumerate(data) if d.size]
        if not keep:
            continue
        ax.boxplot([data[i] for i in keep], showfliers=False)
        for pos, i in enumerate(keep, start=1):
            jitter = np.linspace(-0.15, 0.15, data[i].size)
            ax.plot(pos + jitter, data[i], "o", ms=2.5, color=runtime_colour(labels[i]), alpha=0.7)
        ax.set_xticks(range(1, len(keep) + 1), [labels[i] for i in keep], rotation=30)
        _log_ms_axis(ax, f"{title} latency (ms, log scale)")
        ax.set_title(f"{title} latency per trial")
    return svg(fig)


def _log_ms_axis(ax: Any, label: str) -> None:
    """A log y axis in milliseconds with plain numbers at 1-2-5 steps: "20, 50, 100" reads
    faster than "2 x 10^1"."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(label)


def _line_styles(labels: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Colour and line style per label: a runtime's network paths share its colour."""
    styles = ("-", "--", ":", "-.")
    used: dict[str, int] = {}
    out: dict[str, tuple[str, str]] = {}
    for label in analysis.label_order(labels):
        colour = runtime_colour(label)
        out[label] = (colour, styles[used.get(colour, 0) % len(styles)])
        used[colour] = used.get(colour, 0) + 1
    return out


def service_latency_plot(table: pd.DataFrame) -> str | None:
    """p50..p99.9 of each label's merged histogram on a log scale, one panel per workload;
    a runtime's network paths share its colour and differ in line style."""
    table = table[np.isfinite(table["latency_p50_s"].astype(float))]
    if table.empty:
        return None
    workloads = list(dict.fromkeys(table["workload"]))
    fig, axes = _figure(min(4.2 * len(workloads), 14), 3.0, len(workloads))
    x = np.arange(len(PERCENTILE_COLUMNS))
    for ax, workload in zip(axes, workloads, strict=True):
        rows = table[table["workload"] == workload]
        styles = _line_styles(rows["runtime"])
        for row in rows.itertuples():
            values = [float(getattr(row, column)) * 1e3 for column in PERCENTILE_COLUMNS]
            colour, style = styles[str(row.runtime)]
            ax.plot(x, values, marker="o", ms=3, lw=1, ls=style, color=colour, label=row.runtime)
        ax.set_xticks(x, ["p50", "p90", "p99", "p99.9"])
        _log_ms_axis(ax, "latency (ms, log scale)")
        ax.set_title(f"{workload}: latency percentiles", fontsize=9)
        ax.legend(fontsize=7)
    return svg(fig)


def tier_cpu_plot(table: pd.DataFrame) -> str | None:
    """Each tier's CPU-seconds per 1,000 requests, bars per label grouped by tier, one panel
    per workload; a runtime's network paths share its colour and differ in hatching."""
    table = table[np.isfinite(table["cpu_s_per_1k_requests"].astype(float))]
    if table.empty:
        return None
    workloads = list(dict.fromkeys(table["workload"]))
    fig, axes = _figure(min(4.2 * len(workloads), 14), 3.0, len(workloads))
    hatches = ("", "//", "..", "xx")
    for ax, workload in zip(axes, workloads, strict=True):
        rows = table[table["workload"] == workload]
        tiers = list(dict.fromkeys(rows["tier"]))
        labels = analysis.label_order(rows["runtime"].unique())
        styles = _line_styles(labels)
        seen: dict[str, int] = {}
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            colour = styles[label][0]
            hatch = hatches[seen.get(colour, 0) % len(hatches)]
            seen[colour] = seen.get(colour, 0) + 1
            per_tier = rows[rows["runtime"] == label].set_index("tier")["cpu_s_per_1k_requests"]
            values = [float(per_tier.get(tier, math.nan)) for tier in tiers]
            x = np.arange(len(tiers)) - 0.4 + width * (i + 0.5)
            ax.bar(x, values, width, color=colour, hatch=hatch, edgecolor="#333", label=label)
        ax.set_xticks(np.arange(len(tiers)), tiers)
        ax.set_ylabel("CPU-s per 1,000 requests")
        ax.set_title(f"{workload}: each tier's own CPU during the load", fontsize=9)
        ax.legend(fontsize=7)
    return svg(fig)


def sweep_plot(table: pd.DataFrame) -> str | None:
    """The throughput-latency curve of each rate sweep: achieved requests/s against p99 (log
    scale) per label, one point per offered rate; the knee (service_analysis) circled."""
    swept = table[table["offered_rate_per_s"].notna() & table["latency_p99_s"].notna()]
    swept = swept.assign(sweep=sweep_name(swept["workload"]))
    sweeps = [
        str(name)
        for name, rows in swept.groupby("sweep", sort=True)
        if rows["workload"].nunique() > 1
    ]
    if not sweeps:
        return None
    fig, axes = _figure(min(4.2 * len(sweeps), 14), 3.0, len(sweeps))
    for ax, name in zip(axes, sweeps, strict=True):
        rows = swept[swept["sweep"] == name]
        for label, (colour, style) in _line_styles(rows["runtime"]).items():
            line = rows[rows["runtime"] == label].sort_values("offered_rate_per_s")
            ax.plot(
                line["requests_per_s"].to_numpy(float),
                line["latency_p99_s"].to_numpy(float) * 1e3,
                marker="o",
                ms=3,
                lw=1,
                ls=style,
                color=colour,
                label=label,
            )
            knee = line[line["knee"].astype(bool)]
            ax.plot(
                knee["requests_per_s"].to_numpy(float),
                knee["latency_p99_s"].to_numpy(float) * 1e3,
                marker="o",
                ms=9,
                mfc="none",
                ls="none",
                color=colour,
            )
        _log_ms_axis(ax, "p99 latency (ms, log scale)")
        ax.set_xlabel("achieved requests/s")
        ax.set_title(f"{name}: throughput-latency", fontsize=9)
        ax.legend(fontsize=7)
    return svg(fig)


def timeseries_plot(run: analysis.Run, workload: str) -> str | None:
    """CPU cores in use and memory over time, one representative trial per runtime."""
    chosen = {}
    for label in analysis.label_order(run.trials["label"].unique()):
        tid = analysis.representative_trial(run, label, workload)
        if tid is not None:
            chosen[tid] = label
    if not chosen or run.samples.empty:
        return None
    subset = dataclasses.replace(run, samples=run.samples[run.samples["trial_id"].isin(chosen)])
    have_cpu = "cpu_usage_ns" in subset.samples.columns
    have_mem = "mem_current_bytes" in subset.samples.columns
    if not (have_cpu or have_mem):
        return None
    fig, axes = _figure(10, 2.8, 2)
    if have_cpu:
        cpu = analysis.timeseries(subset, "cpu_rate")
        for tid, label in chosen.items():
            s = cpu[cpu["trial_id"] == tid].dropna(subset=["value"])
            t, v = downsample(s["t_s"].to_numpy(float), s["value"].to_numpy(float))
            axes[0].plot(t, v, lw=1, color=runtime_colour(label), label=label)
        limit = _cpu_limit(run, list(chosen))
        if limit is not None:
            axes[0].axhline(limit, color="#b00020", lw=0.8, ls=":", label=f"limit {limit:g}")
        axes[0].set_ylabel("CPU (cores)")
        axes[0].set_title(f"{workload}: CPU rate (cpuacct usage)")
        axes[0].set_ylim(bottom=0)
    if have_mem:
        mem = analysis.timeseries(subset, "mem_current_bytes")
        for tid, label in chosen.items():
            s = mem[mem["trial_id"] == tid]
            t, v = downsample(
                s["t_s"].to_numpy(float), s["value"].to_numpy(float) / (1 << 20), "max"
            )
            axes[1].plot(t, v, lw=1, color=runtime_colour(label), label=label)
        axes[1].set_ylabel("memory (MiB)")
        axes[1].set_title(f"{workload}: memory usage (memory.current)")
        axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("time since trial start (s)")
        if ax.lines:
            ax.legend(fontsize=7, loc="lower center")
    return svg(fig)


def _cpu_limit(run: analysis.Run, trial_ids: list[str]) -> float | None:
    """The CPU limit (cores) the plotted trials shared, if they had one."""
    limits = run.trials.loc[run.trials["trial_id"].isin(trial_ids), "cpu_limit_cpus"].dropna()
    return float(limits.iloc[0]) if len(limits) and limits.nunique() == 1 else None
