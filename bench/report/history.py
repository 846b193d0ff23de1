"""The history page (bench history): index.html with trend plots, history.md, history.json.

One row builder per table serves HTML and Markdown; plots are inline SVG (matplotlib, no
pyplot), so the page is self-contained like the run report.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench import __version__
from bench.errors import InputError
from bench.frames import label_order
from bench.history import METRIC_ORDER, METRICS, ChangePoint, History
from bench.report.html import CSS, _table
from bench.report.jsonout import jsonable
from bench.report.markdown import Rows, md_table, num, with_ci
from bench.report.plots import RC, runtime_colour, svg

FORMATS = frozenset({"html", "md", "json"})
PANELS_PER_ROW = 4
MARKERS_UP_TO_RUNS = 60
CHANGE_COLOUR = "#b00020"
HISTORY_CSS = ".regression{color:#b00020;font-weight:600}"


def display_unit(metric: str, unit: str) -> tuple[float, str]:
    """Scale and unit a metric is shown in: latencies in ms, memory in MiB."""
    if metric in ("start_s", "stop_s") or metric.startswith("latency_"):
        return 1e3, "ms"
    if metric.endswith("_bytes"):
        return 1.0 / (1 << 20), "MiB"
    return 1.0, unit


def _shown(value: float, metric: str, unit: str) -> str:
    scale, _ = display_unit(metric, unit)
    return num(value * scale)


def _run_label(history: History, position: int) -> str:
    run = history.runs[position]
    return f"{run.run_id} ({run.started_at:%Y-%m-%d %H:%M})"


def changes_text(change: ChangePoint) -> str:
    """What the manifests say changed between the two runs around a change point."""
    if not change.changes:
        return "nothing recorded changed (bench, runtimes, kernel, cgroups, host, image)"
    return "; ".join(f"{c.what}: {c.before or '-'} → {c.after or '-'}" for c in change.changes)


def change_point_rows(history: History) -> Rows:
    headers = [
        "first run after",
        "runtime",
        "workload",
        "metric",
        "before → after",
        "change %",
        "what changed",
    ]
    rows = []
    for c in history.change_points:
        unit = _unit_of(history, c)
        _, shown_unit = display_unit(c.metric, unit)
        pct = num(c.change_pct, "+.1f")
        rows.append(
            [
                _run_label(history, c.position),
                c.runtime,
                c.workload,
                c.metric,
                f"{_shown(c.before, c.metric, unit)} → {_shown(c.after, c.metric, unit)} "
                f"{shown_unit}".strip(),
                f"**{pct}**" if c.regression else pct,
                changes_text(c),
            ]
        )
    return headers, rows


def excluded_rows(history: History) -> Rows:
    headers = ["run", "runtime / workload", "reason"]
    rows = [
        [e.run_id, f"{e.runtime} / {e.workload}" if e.runtime else "whole run", e.reason]
        for e in history.excluded
    ]
    return headers, rows


def series_rows(history: History) -> Rows:
    """Per series: runs, first and latest value with its 95 % CI, change points."""
    headers = ["runtime", "workload", "metric", "runs", "first", "latest [95% CI]", "changes"]
    counts: dict[tuple[str, str, str], int] = {}
    for c in history.change_points:
        key = (c.runtime, c.workload, c.metric)
        counts[key] = counts.get(key, 0) + 1
    rows = []
    for runtime, workload, metric, frame in _ordered_series(history):
        unit = str(frame["unit"].iloc[0])
        scale, shown_unit = display_unit(metric, unit)
        first, last = frame.iloc[0], frame.iloc[-1]
        latest = with_ci(last["value"] * scale, last["low"] * scale, last["high"] * scale)
        rows.append(
            [
                runtime,
                workload,
                f"{metric} ({shown_unit})" if shown_unit else metric,
                str(len(frame)),
                num(first["value"] * scale),
                latest,
                str(counts.get((runtime, workload, metric), 0)),
            ]
        )
    return headers, rows


def _unit_of(history: History, change: ChangePoint) -> str:
    p = history.points
    match = p[
        (p["metric"] == change.metric)
        & (p["runtime"] == change.runtime)
        & (p["workload"] == change.workload)
    ]
    return str(match["unit"].iloc[0]) if len(match) else ""


def _ordered_series(history: History) -> list[tuple[str, str, str, pd.DataFrame]]:
    """Series by workload, metric in METRIC_ORDER, runtime in the registry's order."""
    series = history.series()
    labels = label_order({s[0] for s in series})
    return sorted(
        ((r, w, m, f.sort_values("position")) for r, w, m, f in series),
        key=lambda s: (s[1], METRIC_ORDER.index(s[2]), labels.index(s[0])),
    )


# --- plots -------------------------------------------------------------------------------


def trend_plot(history: History, workload: str, metric: str) -> str | None:
    """One panel per runtime: per-run median with its 95 % CI band, change points marked."""
    import matplotlib

    frames = {r: f for r, w, m, f in _ordered_series(history) if w == workload and m == metric}
    if not frames:
        return None
    labels = list(frames)
    ncols = min(PANELS_PER_ROW, len(labels))
    nrows = -(-len(labels) // ncols)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(min(3.6 * ncols, 14.4), 2.6 * nrows))
        axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(labels))]
    unit = str(next(iter(frames.values()))["unit"].iloc[0])
    scale, shown_unit = display_unit(metric, unit)
    cuts: dict[str, list[ChangePoint]] = {}
    for c in history.change_points:
        if c.workload == workload and c.metric == metric:
            cuts.setdefault(c.runtime, []).append(c)
    for ax, label in zip(axes, labels, strict=True):
        frame = frames[label]
        x = frame["position"].to_numpy(dtype=float)
        colour = runtime_colour(label)
        ax.fill_between(
            x,
            frame["low"].to_numpy(dtype=float) * scale,
            frame["high"].to_numpy(dtype=float) * scale,
            color=colour,
            alpha=0.25,
            lw=0,
        )
        # Markers only while they can be told apart: 365 of them made each panel's SVG
        # several times larger and slower to write.
        style = "o-" if len(frame) <= MARKERS_UP_TO_RUNS else "-"
        ax.plot(x, frame["value"].to_numpy(dtype=float) * scale, style, ms=2, lw=1, color=colour)
        for c in cuts.get(label, []):
            ax.axvline(c.position - 0.5, color=CHANGE_COLOUR, lw=1, ls="--")
            ax.annotate(
                f"{c.change_pct:+.1f} %",
                (c.position - 0.5, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color=CHANGE_COLOUR,
                ha="left",
                va="top",
            )
        ticks = np.unique(np.linspace(0, len(history.runs) - 1, min(len(history.runs), 5)))
        ticks = ticks.astype(int)
        ax.set_xticks(ticks, [f"{history.runs[i].started_at:%m-%d}" for i in ticks], fontsize=7)
        ax.set_title(f"{label}: {metric}", fontsize=9)
        ax.set_ylabel(shown_unit, fontsize=8)
    # Fixed margins, not the run report's tight crop (bench.report.plots.svg).
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.12, top=0.9, wspace=0.3, hspace=0.5)
    return svg(fig, tight=False)


# --- documents ---------------------------------------------------------------------------


def _title(history: History) -> str:
    s = history.scenario
    return f"bench history: {s.name} ({s.sha256[:12]})" if s else "bench history"


def _span(history: History) -> str:
    if not history.runs:
        return "no runs"
    first, last = history.runs[0], history.runs[-1]
    return (
        f"{len(history.runs)} runs, {first.started_at:%Y-%m-%d %H:%M} → "
        f"{last.started_at:%Y-%m-%d %H:%M}; {len(history.change_points)} change point(s); "
        f"{len(history.excluded)} exclusion(s)"
    )


def render_history_markdown(history: History) -> str:
    """GitHub-flavoured Markdown for a CI job summary."""
    out = [f"# {_title(history)}\n", _span(history) + "\n"]
    out += ["## Change points\n", md_table(*change_point_rows(history))]
    out += ["## Left out\n", md_table(*excluded_rows(history))]
    out += ["## Series\n", md_table(*series_rows(history))]
    return "\n".join(out)


def render_history_html(history: History) -> str:
    """The whole history as one self-contained HTML document."""
    title = escape(_title(history))
    body = [f"<h1>{title}</h1>", f"<p>{escape(_span(history))}</p>"]
    body.append("<h2>Change points</h2>" + _table(change_point_rows(history)))
    body.append("<h2>Left out</h2>" + _table(excluded_rows(history)))
    body.append("<h2>Trends</h2>")
    pairs = dict.fromkeys((w, m) for _, w, m, _ in _ordered_series(history))
    for workload, metric in pairs:
        svg = trend_plot(history, workload, metric)
        if svg is not None:
            caption = escape(
                f"{workload}: {metric}, each run's median with its 95 % CI (band); "
                "dashed red lines: change points"
            )
            body.append(f"<figure>{svg}<figcaption>{caption}</figcaption></figure>")
    body.append("<h2>Series</h2>" + _table(series_rows(history)))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{title}</title><style>{CSS}{HISTORY_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def history_dict(history: History) -> dict[str, Any]:
    """history.json: runs, every series' points, change points and exclusions."""
    series = []
    for runtime, workload, metric, frame in _ordered_series(history):
        series.append(
            {
                "runtime": runtime,
                "workload": workload,
                "metric": metric,
                "unit": str(frame["unit"].iloc[0]),
                "bigger_is_better": METRICS[metric],
                "points": [
                    jsonable(
                        {
                            "run_id": history.runs[int(position)].run_id,
                            "started_at": history.runs[int(position)].started_at.isoformat(),
                            "value": value,
                            "low": low,
                            "high": high,
                            "n": int(n),
                        }
                    )
                    for position, value, low, high, n in frame[
                        ["position", "value", "low", "high", "n"]
                    ].to_numpy(dtype=float)
                ],
            }
        )
    return {
        "bench_version": __version__,
        "scenario": jsonable(asdict(history.scenario)) if history.scenario else None,
        "runs": [
            {"run_id": r.run_id, "started_at": r.started_at.isoformat(), "path": str(r.path)}
            for r in history.runs
        ],
        "change_points": [jsonable(asdict(c)) for c in history.change_points],
        "excluded": [jsonable(asdict(e)) for e in history.excluded],
        "series": series,
    }


def build_history(history: History, out_dir: Path, formats: set[str]) -> list[Path]:
    """Write index.html, history.md and/or history.json to out_dir; the files written."""
    unknown = set(formats) - FORMATS
    if unknown or not formats:
        raise InputError(
            f"unknown history format(s) {', '.join(sorted(unknown)) or '(none given)'}; "
            f"choose from {', '.join(sorted(FORMATS))}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "html" in formats:
        path = out_dir / "index.html"
        path.write_text(render_history_html(history), encoding="utf-8")
        written.append(path)
    if "md" in formats:
        path = out_dir / "history.md"
        path.write_text(render_history_markdown(history), encoding="utf-8")
        written.append(path)
    if "json" in formats:
        path = out_dir / "history.json"
        text = json.dumps(history_dict(history), indent=2, allow_nan=False)
        path.write_text(text + "\n", encoding="utf-8")
        written.append(path)
    return written
