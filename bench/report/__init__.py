"""Reports from result stores: one self-contained index.html, report.md, report.json + exports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench import analysis, stats
from bench.errors import InputError

FORMATS = frozenset({"html", "md", "json"})


@dataclass
class RunSummary:
    """Everything a report shows about one run, computed once for all formats."""

    run: analysis.Run
    overhead: pd.DataFrame
    isolation: pd.DataFrame
    startup: pd.DataFrame
    footprint: pd.DataFrame
    services: pd.DataFrame
    tiers: pd.DataFrame  # multi-tier services: each tier's own CPU and memory
    warnings: list[stats.StatWarning]
    baseline: str  # the runtime label overhead ratios are taken against


def summarize(run: analysis.Run, baseline: str | None = None) -> RunSummary:
    """Compute the tables and warnings of one run; `baseline` defaults to the registry's."""
    baseline = analysis.default_baseline(run.trials["label"]) if baseline is None else baseline
    return RunSummary(
        run=run,
        baseline=baseline,
        overhead=analysis.overhead_table(run, baseline=baseline),
        isolation=analysis.isolation_table(run),
        startup=analysis.startup_table(run),
        footprint=analysis.footprint_table(run),
        services=analysis.service_table(run),
        tiers=analysis.tier_table(run),
        warnings=analysis.warnings(run),
    )


def build_report(runs: list[analysis.Run], out_dir: Path, formats: set[str]) -> list[Path]:
    """Write the requested formats ("html", "md", "json") to out_dir; return the files written.

    "json" also writes per-run exports: pytest-benchmark JSON and github-action-benchmark
    customBiggerIsBetter / customSmallerIsBetter files.
    """
    from bench.report import html, jsonout, markdown

    unknown = set(formats) - FORMATS
    if unknown or not formats:
        raise InputError(
            f"unknown report format(s) {', '.join(sorted(unknown)) or '(none given)'}; "
            f"choose from {', '.join(sorted(FORMATS))}"
        )
    if not runs:
        raise InputError("a report needs at least one run directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarize(run) for run in runs]
    written: list[Path] = []
    if "html" in formats:
        path = out_dir / "index.html"
        path.write_text(html.render_html(summaries), encoding="utf-8")
        written.append(path)
    if "md" in formats:
        path = out_dir / "report.md"
        path.write_text(markdown.render_markdown(summaries), encoding="utf-8")
        written.append(path)
    if "json" in formats:
        written += jsonout.write_json(summaries, out_dir)
    return written


__all__ = ["FORMATS", "RunSummary", "build_report", "summarize"]
