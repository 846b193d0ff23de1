"""The tables printed after `bench run`: overhead, isolation, footprint (from the store)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console


def _num(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    try:
        number = float(value) * scale
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(number) else f"{number:,.{digits}f}"


def _ci(
    row: pd.Series, value: str, low: str, high: str, digits: int = 2, scale: float = 1.0
) -> str:
    return (
        f"{_num(row[value], digits, scale)} "
        f"[{_num(row[low], digits, scale)}, {_num(row[high], digits, scale)}]"
    )


def _yes_no(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    try:
        return "yes" if bool(value) else "no"
    except (TypeError, ValueError):
        return "?"


def _table(console: Console, title: str, headers: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def overhead_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [
            str(row["runtime"]),
            f"{row['workload']} ({row['unit']})" if row["unit"] else str(row["workload"]),
            str(row["n"]),
            _ci(row, "median", "median_low", "median_high", 1),
            _ci(row, "ratio", "ratio_low", "ratio_high"),
            _num(row["cpu_s_ratio"], 2),
            _num(row["mem_peak_delta_bytes"], 1, 1 / 2**20),
            _num(row["start_ms"], 0),
            _num(row["stop_ms"], 0),
            str(row["verdict"]),
        ]
        for _, row in frame.iterrows()
    ]


def isolation_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [
            str(row["runtime"]),
            f"{row['kind']} ({row['placement']})",
            str(row["n"]),
            _ci(row, "degradation_pct", "degradation_low_pct", "degradation_high_pct", 1),
            _yes_no(row["limit_held"]),
            _yes_no(row["aggressor_oom_killed"]),
            _yes_no(row["victim_harmed"]),
        ]
        for _, row in frame.iterrows()
    ]


def footprint_rows(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for _, row in frame.iterrows():
        if str(row["runtime"]).startswith("bare"):
            continue
        per_container = (
            _ci(row, "pss_per_container_bytes", "pss_per_container_low_bytes",
                "pss_per_container_high_bytes", 1, 1 / 2**20)
            if "pss_per_container_bytes" in row
            else "-"
        )  # fmt: skip
        rows.append(
            [
                str(row["runtime"]),
                _num(row["runtime_rss_bytes"], 1, 1 / 2**20),
                _num(row["runtime_pss_bytes"], 1, 1 / 2**20),
                per_container,
            ]
        )
    return rows


def print_run_summary(run_dir: Path, skipped: dict[str, str]) -> None:
    """Print what the run measured, as the analysis API computes it, on stdout."""
    from rich.console import Console

    from bench.analysis import footprint_table, isolation_table, load_run, overhead_table

    console = Console(width=max(Console().width, 120))
    run = load_run(run_dir)
    trials = run.trials
    overhead = overhead_table(run)
    if len(overhead):
        _table(
            console,
            "Overhead vs bare metal: medians [95% CI] of measured trials",
            ["runtime", "workload", "n", "median", "ratio to bare", "cpu-s ratio",
             "peak Δ MiB", "start ms", "stop ms", "verdict"],
            overhead_rows(overhead),
        )  # fmt: skip
    if (trials["role"] == "victim").any():
        _table(
            console,
            "Isolation: victim degradation vs the victim alone [95% CI]",
            ["runtime", "aggressor", "n", "degradation %", "limit held", "aggressor OOM",
             "victim harmed"],
            isolation_rows(isolation_table(run)),
        )  # fmt: skip
    solo = trials[trials["role"] == "solo"]
    if "group_size" in solo and (solo["group_size"].fillna(1) > 1).any():
        _table(
            console,
            "Runtime footprint (its own processes while the containers run)",
            ["runtime", "RSS MiB", "PSS MiB", "PSS MiB per container [95% CI]"],
            footprint_rows(footprint_table(run)),
        )
    not_ok = trials[(trials["status"] != "ok") & (trials["status"] != "skipped")]
    for _, row in not_ok.iterrows():
        console.print(f"{row['trial_id']}: {row['status']} {row['error']}", highlight=False)
    for name, reason in skipped.items():
        console.print(f"skipped {name}: {reason}", highlight=False)
