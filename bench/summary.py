"""The tables printed after `bench run`: overhead, isolation, services, footprint (from the
store).

Rows come from the report's own builders (bench/report/markdown.py), so the terminal and
report.md always show the same numbers formatted the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from bench.report.markdown import Rows


def _table(console: Console, title: str, rows: Rows) -> None:
    from rich.table import Table

    headers, body = rows
    table = Table(title=title, title_justify="left")
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index < 2 else "right", no_wrap=True)
    for row in body:
        table.add_row(*(cell.replace("**", "") for cell in row))  # Markdown bold
    console.print(table)


def print_run_summary(run_dir: Path, skipped: dict[str, str]) -> None:
    """Print what the run measured, as the analysis API computes it, on stdout."""
    from rich.console import Console

    from bench.analysis import (
        default_baseline,
        footprint_table,
        isolation_table,
        load_run,
        overhead_table,
        service_table,
        service_warnings,
        tier_table,
    )
    from bench.report.markdown import (
        FOOTPRINT_TITLE,
        SERVICE_TITLE,
        TIER_TITLE,
        baseline_title,
        footprint_rows,
        isolation_rows,
        overhead_rows,
        service_rows,
        tier_rows,
    )

    console = Console(width=max(Console().width, 180))
    run = load_run(run_dir)
    trials = run.trials
    baseline = default_baseline(trials["label"])
    overhead = overhead_table(run, baseline=baseline)
    if len(overhead):
        title = f"Overhead vs {baseline_title(baseline)}: medians [95% CI] of measured trials"
        _table(console, title, overhead_rows(overhead, baseline))
    if (trials["role"] == "victim").any():
        title = "Isolation: victim loss vs the victim alone [95% CI]"
        _table(console, title, isolation_rows(isolation_table(run)))
    services = service_table(run)
    if len(services):
        _table(console, SERVICE_TITLE, service_rows(services))
        for warning in service_warnings(run):
            console.print(f"warning: {warning.message}", style="bold red", highlight=False)
    tiers = tier_table(run)
    if len(tiers):
        _table(console, TIER_TITLE, tier_rows(tiers))
    footprint = footprint_table(run)
    if len(footprint):
        _table(console, FOOTPRINT_TITLE, footprint_rows(footprint))
    not_ok = trials[(trials["status"] != "ok") & (trials["status"] != "skipped")]
    for _, row in not_ok.iterrows():
        console.print(f"{row['trial_id']}: {row['status']} {row['error']}", highlight=False)
    for name, reason in skipped.items():
        console.print(f"skipped {name}: {reason}", highlight=False)
