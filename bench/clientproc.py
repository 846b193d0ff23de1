"""A load generator as a measured child: its own process group, its rusage, a kill timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def busy_fraction(before: Sequence[Any], after: Sequence[Any], cpus: frozenset[int]) -> float:
    """Share of the time CPUs `cpus` were not idle between two psutil per-CPU readings."""
    busy = total = 0.0
    for cpu in sorted(cpus):
        if cpu >= min(len(before), len(after)):
            continue
        start, end = before[cpu], after[cpu]
        span = sum(end) - sum(start)
        idle = (end.idle - start.idle) + (end.iowait - start.iowait)
        busy += span - idle
        total += span
    return busy / total if total > 0 else 0.0


@dataclass(frozen=True)
class ChildRun:
    exit_code: int
    wall_s: float
    cpu_s: float
    killed: bool


def run_child(argv: list[str], output: Path, kill_after_s: float) -> ChildRun:
    """Run argv in its own process group, output to a file; its rusage from wait4."""
    with output.open("wb") as sink:
        started = time.monotonic()
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=output.parent,
            start_new_session=True,  # one group: a kill reaches anything it started
        )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        kill_group(child.pid)

    timer = threading.Timer(kill_after_s, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except BaseException:
        kill_group(child.pid)
        os.wait4(child.pid, 0)
        raise
    finally:
        timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    kill_group(child.pid)  # anything the generator left in its group
    return ChildRun(
        exit_code=child.returncode,
        wall_s=time.monotonic() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        killed=killed.is_set(),
    )


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
