"""Processes the runtimes start: monitors (lxc-execute, lxc-start, systemd-nspawn), the
workload's lxc-attach or `lxc exec`, private daemons (containerd, podman's service), and
bare metal's workload.

Each runs in its own session: a Ctrl-C aimed at bench must not end it before the runner has
read the container's final counters and stopped or removed what the runtime made.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from bench.errors import BenchError

# How much of a process's log an error message quotes: its end, where the reason is.
LOG_TAIL_CHARS = 800


def spawn(
    argv: Sequence[str],
    output: IO[bytes],
    *,
    stderr: IO[bytes] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, stdin closed, its stdout (and its stderr unless
    given) into `output`."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output if stderr is None else stderr,
        start_new_session=True,
        cwd=cwd,
        preexec_fn=preexec_fn,
    )


def log_tail(log: IO[bytes]) -> str:
    """The end of a log a process wrote into a temporary file."""
    log.seek(0)
    return log.read().decode(errors="replace").strip()[-LOG_TAIL_CHARS:]


def exited_early(
    tool: str, name: str, process: subprocess.Popen[bytes], log_path: Path, before: str
) -> BenchError:
    """The error for a monitor `tool` of container `name` that ended `before` (its log's end)."""
    log = log_path.read_text(errors="replace").strip()[-LOG_TAIL_CHARS:]
    return BenchError(
        f"{tool} for {name} exited with status {process.returncode} "
        f"before {before}: {log or 'no output'}"
    )


def running_pids(processes: Iterable[subprocess.Popen[bytes]]) -> list[int]:
    """The pids of those `processes` that still run, in order."""
    return sorted(process.pid for process in processes if process.poll() is None)
