"""One self-contained index.html: inline CSS and the inline SVG plots of bench.report.plots.

Works offline: no scripts, no external stylesheets or fonts.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from bench.report import plots
from bench.report.markdown import (
    FOOTPRINT_TITLE,
    SERVICE_TITLE,
    TIER_TITLE,
    Rows,
    baseline_title,
    footprint_rows,
    host_rows,
    isolation_rows,
    overhead_rows,
    service_rows,
    side_by_side_rows,
    startup_rows,
    tier_rows,
)

if TYPE_CHECKING:
    from bench.report import RunSummary

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1600px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;white-space:nowrap}
th{background:#f4f4f4}.facts th{font-weight:600;text-align:right}
.scroll{overflow-x:auto}
.runs{display:grid;gap:1.5em}
.warn li{margin:.2em 0}.kind{font-weight:600}
figure{margin:.5em 0}svg{max-width:100%;height:auto}
.slower,.harmed{color:#b00020;font-weight:600}.faster{color:#1b7f1b;font-weight:600}
"""


def _key_value_table(rows: Rows) -> str:
    """Two-column facts (host, versions): keys as row headers, no empty header row."""
    body = "".join(
        f'<tr><th scope="row">{escape(key)}</th><td>{escape(value)}</td></tr>'
        for key, value in rows[1]
    )
    return f'<div class="scroll"><table class="facts"><tbody>{body}</tbody></table></div>'


def _table(rows: Rows, verdict_col: int | None = None) -> str:
    headers, body = rows
    if not body:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = []
    for row in body:
        cells = []
        for i, cell in enumerate(row):
            text = cell.replace("**", "")
            cls = ""
            if i == verdict_col and text in ("slower", "faster"):
                cls = f' class="{text}"'
            elif cell.startswith("**"):
                cls = ' class="harmed"'
            cells.append(f"<td{cls}>{escape(text)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _figure_html(svg: str | None, caption: str) -> str:
    if svg is None:
        return ""
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _warnings_html(s: RunSummary) -> str:
    """Warnings first, before the numbers they qualify."""
    if not s.warnings:
        return "<h3>Warnings</h3><p>None.</p>"
    items = "".join(
        f'<li><span class="kind">{escape(w.kind)}</span>: {escape(w.message)}</li>'
        for w in s.warnings
    )
    return f'<h3>Warnings ({len(s.warnings)})</h3><ul class="warn">{items}</ul>'


def _run_section(s: RunSummary) -> str:
    run = s.run
    parts = [f"<section><h2>Run {escape(run.run_id)}</h2>"]
    parts.append("<h3>Host and versions</h3>" + _key_value_table(host_rows(s)))
    parts.append(_warnings_html(s))
    parts.append(
        f"<h3>Overhead vs {escape(baseline_title(s.baseline))}</h3>"
        + _table(overhead_rows(s.overhead, s.baseline), 10)
    )
    parts.append(
        _figure_html(
            plots.overhead_plot(s.overhead, s.baseline),
            f"Ratio to {s.baseline}, 95 % bootstrap CI whiskers",
        )
    )
    if len(s.isolation):
        parts.append("<h3>Isolation</h3>" + _table(isolation_rows(s.isolation)))
        parts.append(
            _figure_html(plots.isolation_plot(s.isolation), "Victim loss vs its solo baseline")
        )
    if len(s.services):
        parts.append(f"<h3>{escape(SERVICE_TITLE)}</h3>" + _table(service_rows(s.services)))
        parts.append(
            _figure_html(
                plots.service_latency_plot(s.services),
                "Latency percentiles of the merged histograms of the measured repetitions",
            )
        )
        parts.append(
            _figure_html(plots.sweep_plot(s.services), "Rate sweeps: one point per offered rate")
        )
    if len(s.tiers):
        parts.append(f"<h3>{escape(TIER_TITLE)}</h3>" + _table(tier_rows(s.tiers)))
        parts.append(
            _figure_html(plots.tier_cpu_plot(s.tiers), "Per tier: its own cgroup's CPU per request")
        )
    parts.append("<h3>Start and stop latency</h3>" + _table(startup_rows(s.startup)))
    parts.append(_figure_html(plots.latency_plot(run), "Per-trial latency, log scale"))
    parts.append(f"<h3>{escape(FOOTPRINT_TITLE)}</h3>" + _table(footprint_rows(s.footprint)))
    parts.append("<h3>Over time</h3>")
    for workload in sorted(run.trials.loc[run.trials["role"] == "solo", "workload"].unique()):
        parts.append(
            _figure_html(
                plots.timeseries_plot(run, str(workload)),
                f"{workload}: representative trial per runtime",
            )
        )
    parts.append("</section>")
    return "\n".join(parts)


def render_html(summaries: list[RunSummary]) -> str:
    """The whole report as one HTML document (also well-formed XML)."""
    ids = ", ".join(s.run.run_id for s in summaries)
    body = [f"<h1>bench report: {escape(ids)}</h1>"]
    if len(summaries) > 1:
        body.append(
            f"<h2>Overhead side by side (ratio to {escape(summaries[0].baseline)})</h2>"
            + _table(side_by_side_rows(summaries))
        )
    columns = f"grid-template-columns:repeat({len(summaries)},minmax(0,1fr))"
    body.append(f'<div class="runs" style="{columns}">')
    body += [_run_section(s) for s in summaries]
    body.append("</div>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>bench report: {escape(ids)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
