"""The table printed after `bench run`: medians per runtime and workload."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable

from bench.results import TrialResult


def _median(values: Iterable[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def summary_rows(trials: list[TrialResult]) -> list[list[str]]:
    """One row per (runtime, OCI runtime, workload) over measured (non-warm-up) trials."""
    groups: dict[tuple[str, str, str], list[TrialResult]] = defaultdict(list)
    for trial in trials:
        if not trial.warmup:
            groups[(trial.runtime, trial.oci_runtime, trial.workload)].append(trial)
    rows = []
    for (runtime, oci, workload), members in groups.items():
        ok = [t for t in members if t.status == "ok"]
        statuses: dict[str, int] = defaultdict(int)
        for t in members:
            statuses[t.status] += 1
        rows.append(
            [
                f"{runtime}+{oci}" if oci else runtime,
                workload,
                f"{len(ok)}/{len(members)}",
                _fmt(_median(t.throughput for t in ok)),
                _fmt(_median(t.cpu_s for t in ok), digits=2),
                _fmt(_median(t.mem_peak_bytes for t in ok), 1 / 2**20),
                _fmt(_median(t.start_s for t in ok), 1000),
                _fmt(_median(t.stop_s for t in ok), 1000),
                ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()) if k != "ok"),
            ]
        )
    return rows


HEADERS = ["runtime", "workload", "ok", "ops/s", "cpu s", "peak MiB", "start ms", "stop ms",
           "not ok"]  # fmt: skip


def print_summary(trials: list[TrialResult], skipped: dict[str, str]) -> None:
    """Print the medians table and why runtimes were skipped (to stdout)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="bench: medians of measured trials (ops/s: stress-ng bogo-ops/s, real time)",
        title_justify="left",
    )
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("runtime", "workload") else "right")
    for row in summary_rows(trials):
        table.add_row(*row)
    console = Console(width=max(Console().width, 110))
    console.print(table)
    for name, reason in skipped.items():
        console.print(f"skipped {name}: {reason}", highlight=False)
