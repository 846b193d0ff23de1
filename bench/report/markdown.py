"""Markdown report (ready for a CI job summary) and the table rows HTML shares."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench import stats
from bench.runtimes import registry

if TYPE_CHECKING:
    from bench.report import RunSummary

Rows = tuple[list[str], list[list[str]]]
FOOTPRINT_TITLE = "Runtime footprint (its own processes while the containers run)"
SERVICE_TITLE = "Services: throughput, latency of the merged histograms, p99 vs the baseline"
TIER_TITLE = "Tiers of multi-tier services: each tier's own CPU during the load, memory peak"


def num(value: Any, spec: str = ".4g") -> str:
    """A number for a table cell; blank for NaN/None."""
    if value is None or value is pd.NA:
        return ""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if not math.isfinite(x) else format(x, spec)


def mib(value: Any) -> str:
    """Bytes as signed MiB with one decimal."""
    text = num(value, "+.1f") if value is not None else ""
    return text if text == "" else num(float(value) / (1 << 20), "+.1f")


def with_ci(value: Any, low: Any, high: Any, spec: str = ".4g") -> str:
    """`value [low, high]`, or just the value when the CI is missing."""
    main = num(value, spec)
    if not main or not num(low):
        return main
    return f"{main} [{num(low, spec)}, {num(high, spec)}]"


def texts(row: Any, *columns: str) -> list[str]:
    """The named columns of an itertuples() row, as they print."""
    return [str(getattr(row, column)) for column in columns]


def yes_no(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return "yes" if bool(value) else "no"


def baseline_title(baseline: str) -> str:
    """How headings name a comparison's baseline: "bare metal" for bare, "bare metal on
    loopback" for bare/host (the baseline of network paths), else its label."""
    known = registry.of_label(baseline)
    if known is not None and known.name == baseline:
        return known.heading
    if known is not None and baseline == f"{known.name}/host":
        return f"{known.heading} on loopback"
    return baseline


def overhead_rows(table: pd.DataFrame, baseline: str) -> Rows:
    headers = [
        "runtime",
        "workload",
        "n",
        "median [95% CI]",
        f"ratio to {baseline} [95% CI]",
        "CPU-s ratio",
        "peak mem Δ MiB",
        "start ms",
        "stop ms",
        "p",
        "verdict",
    ]
    rows = [
        [
            *texts(r, "runtime", "workload", "n"),
            f"{with_ci(r.median, r.median_low, r.median_high)} {r.unit}".strip(),
            with_ci(r.ratio, r.ratio_low, r.ratio_high, ".3f"),
            num(r.cpu_s_ratio, ".3f"),
            mib(r.mem_peak_delta_bytes),
            num(r.start_ms, ".1f"),
            num(r.stop_ms, ".1f"),
            num(r.p_value, ".2g"),
            str(r.verdict),
        ]
        for r in table.itertuples()
    ]
    return headers, rows


def isolation_rows(table: pd.DataFrame) -> Rows:
    headers = [
        "runtime",
        "aggressor",
        "placement",
        "victim",
        "n",
        "victim loss % [95% CI]",
        "p",
        "limit held",
        "aggressor OOM-killed",
        "victim failed",
        "victim harmed",
    ]
    rows = [
        [
            *texts(r, "runtime", "kind", "placement", "victim_workload", "n"),
            with_ci(r.degradation_pct, r.degradation_low_pct, r.degradation_high_pct, ".1f"),
            num(r.p_value, ".2g"),
            yes_no(r.limit_held),
            yes_no(r.aggressor_oom_killed),
            str(r.victim_failed),
            "**yes**" if r.victim_harmed else "no",
        ]
        for r in table.itertuples()
    ]
    return headers, rows


def startup_rows(table: pd.DataFrame) -> Rows:
    headers = ["runtime", "n", "start ms [95% CI]", "stop ms [95% CI]", "fastest start"]
    rows = [
        [
            *texts(r, "runtime", "n"),
            with_ci(r.start_ms, r.start_low_ms, r.start_high_ms, ".1f"),
            with_ci(r.stop_ms, r.stop_low_ms, r.stop_high_ms, ".1f"),
            "yes" if r.fastest else "",
        ]
        for r in table.itertuples()
    ]
    # The boot column only when a runtime booted an init (system containers): part of start.
    if "boot_ms" in table and table["boot_ms"].notna().any():
        headers.insert(3, "of which boot ms [95% CI]")
        for row, r in zip(rows, table.itertuples(), strict=True):
            row.insert(3, with_ci(r.boot_ms, r.boot_low_ms, r.boot_high_ms, ".1f") or "-")
    return headers, rows


def footprint_rows(table: pd.DataFrame) -> Rows:
    """Runtime RSS/PSS, and PSS per container for density runs (analysis.footprint_table)."""
    headers = ["runtime", "RSS MiB", "PSS MiB", "PSS MiB per container [95% CI]"]
    rows = []
    for _, row in table.iterrows():
        per_container = "-"
        if "pss_per_container_bytes" in row:
            value, low, high = (
                row[f"pss_per_container{s}_bytes"] / 2**20 for s in ("", "_low", "_high")
            )
            per_container = with_ci(value, low, high, ".2f") or "-"
        rows.append(
            [
                str(row["runtime"]),
                num(row["runtime_rss_bytes"] / 2**20, ".1f"),
                num(row["runtime_pss_bytes"] / 2**20, ".1f"),
                per_container,
            ]
        )
    return headers, rows


def ms(seconds: Any) -> str:
    """Seconds as milliseconds with 4 significant digits; blank for NaN/None."""
    return num(float(seconds) * 1e3) if num(seconds) else ""


def _finite(value: Any) -> float:
    """A cell's number, NaN for None/NA (which compares false either way)."""
    return math.nan if value is None or value is pd.NA else float(value)


def service_rows(table: pd.DataFrame) -> Rows:
    """Service workloads per label (analysis.service_table). In bold: a p99 significantly
    above the baseline's (its label heads each workload), and a saturated client; a rate
    sweep's knee is marked "(knee)"."""
    headers = [
        "runtime",
        "workload",
        "n",
        "req/s [95% CI]",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "p99 vs base",
        "helper CPU-s/1k",
        "server CPU-s/1k",
        "saturated",
    ]
    rows = []
    for r in table.itertuples():
        ratio = num(r.p99_ratio, ".3f")
        if ratio and _finite(r.p99_ratio) > 1.0 and _finite(r.p99_p_value) < stats.ALPHA:
            ratio = f"**{ratio}**"
        rows.append(
            [
                str(r.runtime),
                f"{r.workload} (knee)" if r.knee else str(r.workload),
                str(r.n),
                with_ci(r.requests_per_s, r.requests_per_s_low, r.requests_per_s_high),
                str(r.errors),
                ms(r.latency_p50_s),
                ms(r.latency_p90_s),
                ms(r.latency_p99_s),
                ms(r.latency_p999_s),
                ratio,
                num(r.helper_cpu_s_per_1k_requests, ".3g") or "-",
                num(r.server_cpu_s_per_1k_requests, ".3g"),
                "**yes (" + str(r.client_saturated) + f" of {r.n!s})**"
                if r.client_saturated
                else "no",
            ]
        )
    return headers, rows


def tier_rows(table: pd.DataFrame) -> Rows:
    """Each tier of a multi-tier workload per label (analysis.tier_table): CPU-seconds of its
    own cgroup during the load, per 1,000 of the front's requests, and its memory peak."""
    headers = [
        "workload",
        "tier",
        "runtime",
        "n",
        "CPU-s during load [95% CI]",
        "CPU-s/1k req",
        "memory peak MiB",
    ]
    rows = [
        [
            *texts(r, "workload", "tier", "runtime", "n"),
            with_ci(r.load_cpu_s, r.load_cpu_s_low, r.load_cpu_s_high, ".3g"),
            num(r.cpu_s_per_1k_requests, ".3g"),
            num(_finite(r.mem_peak_bytes) / (1 << 20), ".1f"),
        ]
        for r in table.itertuples()
    ]
    return headers, rows


def host_rows(summary: RunSummary) -> Rows:
    m = summary.run.manifest
    rows = [
        ["run", f"{summary.run.run_id} ({m.status})"],
        ["scenario", f"{m.scenario.name} {m.scenario.sha256[:12]}"],
        ["time", f"{m.started_at} → {m.ended_at or ''}"],
    ]
    if m.host is not None:
        host = m.host
        rows += [
            ["host", f"{host.hostname}, kernel {host.kernel}"],
            ["cpu", f"{host.cpu_model}, {host.cpus} CPUs"],
            ["memory", f"{num(host.memory_bytes / (1 << 30), '.1f')} GiB"],
            ["cgroups", host.cgroup_version],
        ]
    rows += [
        ["load before", num(m.host_load_before, ".2f")],
        ["image", m.image.digest[:19]],
        ["bench", f"{m.bench_version} {(m.git_commit or '')[:12]}"],
    ]
    for name, info in m.runtimes.items():
        state = info.version if info.available else info.reason
        rows.append(
            [f"runtime {name}", state or ("available" if info.available else "unavailable")]
        )
    return ["", ""], rows


def side_by_side_rows(summaries: list[RunSummary]) -> Rows:
    """Ratio to each run's baseline per runtime x workload, one column per run."""
    frames = []
    for s in summaries:
        t = s.overhead
        cells = [
            with_ci(r.ratio, r.ratio_low, r.ratio_high, ".3f")
            + (f" ({r.verdict})" if r.verdict not in ("baseline", "same") else "")
            for r in t.itertuples()
        ]
        frames.append(
            pd.Series(
                cells, index=pd.MultiIndex.from_frame(t[["runtime", "workload"]]), name=s.run.run_id
            )
        )
    joined = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    headers = ["runtime", "workload", *[s.run.run_id for s in summaries]]
    rows = [
        [str(k[0]), str(k[1]), *[str(v) if isinstance(v, str) else "" for v in vals]]
        for k, vals in zip(joined.index, joined.to_numpy().tolist(), strict=True)
    ]
    return headers, rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_\n"
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(summaries: list[RunSummary]) -> str:
    """The whole report as GitHub-flavoured Markdown."""
    ids = ", ".join(f"`{s.run.run_id}`" for s in summaries)
    out = [f"# bench report: {ids}\n"]
    if len(summaries) > 1:
        out += [
            f"## Overhead side by side (ratio to {summaries[0].baseline})\n",
            md_table(*side_by_side_rows(summaries)),
        ]
    for s in summaries:
        h = "##" if len(summaries) == 1 else "###"
        if len(summaries) > 1:
            out.append(f"## Run `{s.run.run_id}`\n")
        out += [f"{h} Host and versions\n", md_table(*host_rows(s))]
        out += [
            f"{h} Overhead vs {baseline_title(s.baseline)}\n",
            md_table(*overhead_rows(s.overhead, s.baseline)),
        ]
        if len(s.isolation):
            out += [f"{h} Isolation\n", md_table(*isolation_rows(s.isolation))]
        if len(s.services):
            out += [f"{h} {SERVICE_TITLE}\n", md_table(*service_rows(s.services))]
        if len(s.tiers):
            out += [f"{h} {TIER_TITLE}\n", md_table(*tier_rows(s.tiers))]
        out += [f"{h} Start and stop latency\n", md_table(*startup_rows(s.startup))]
        out += [f"{h} {FOOTPRINT_TITLE}\n", md_table(*footprint_rows(s.footprint))]
        out.append(f"{h} Warnings\n")
        if s.warnings:
            out.append("\n".join(f"- **{w.kind}**: {w.message}" for w in s.warnings) + "\n")
        else:
            out.append("None.\n")
    return "\n".join(out)
