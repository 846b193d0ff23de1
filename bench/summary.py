"""The tables printed after `bench run`: overhead, isolation, footprint (from the store).

Rows come from the report's own builders (bench/report/markdown.py), so the terminal and
report.md always show the same numbers formatted the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
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


def footprint_rows(frame: pd.DataFrame) -> Rows:
    """Runtime RSS/PSS, and PSS per container for density runs (bare has no runtime)."""
    from bench.report.markdown import num, with_ci

    headers = ["runtime", "RSS MiB", "PSS MiB", "PSS MiB per container [95% CI]"]
    rows = []
    for _, row in frame.iterrows():
        if str(row["runtime"]).startswith("bare"):
            continue
        per_container = "-"
        if "pss_per_container_bytes" in row:
            value, low, high = (
                row[f"pss_per_container{s}_bytes"] / 2**20 for s in ("", "_low", "_high")
            )
            per_container = with_ci(value, low, high, ".2f")
        rows.append(
            [
                str(row["runtime"]),
                num(row["runtime_rss_bytes"] / 2**20, ".1f"),
                num(row["runtime_pss_bytes"] / 2**20, ".1f"),
                per_container,
            ]
        )
    return headers, rows


def print_run_summary(run_dir: Path, skipped: dict[str, str]) -> None:
    """Print what the run measured, as the analysis API computes it, on stdout."""
    from rich.console import Console

    from bench.analysis import footprint_table, isolation_table, load_run, overhead_table
    from bench.report.markdown import isolation_rows, overhead_rows

    console = Console(width=max(Console().width, 180))
    run = load_run(run_dir)
    trials = run.trials
    overhead = overhead_table(run)
    if len(overhead):
        title = "Overhead vs bare metal: medians [95% CI] of measured trials"
        _table(console, title, overhead_rows(overhead))
    if (trials["role"] == "victim").any():
        title = "Isolation: victim loss vs the victim alone [95% CI]"
        _table(console, title, isolation_rows(isolation_table(run)))
    solo = trials[trials["role"] == "solo"]
    if "group_size" in solo and (solo["group_size"].fillna(1) > 1).any():
        title = "Runtime footprint (its own processes while the containers run)"
        _table(console, title, footprint_rows(footprint_table(run)))
    not_ok = trials[(trials["status"] != "ok") & (trials["status"] != "skipped")]
    for _, row in not_ok.iterrows():
        console.print(f"{row['trial_id']}: {row['status']} {row['error']}", highlight=False)
    for name, reason in skipped.items():
        console.print(f"skipped {name}: {reason}", highlight=False)
