"""The workload catalogue: a workload's argv, its binaries, and the metric it reports."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.errors import BenchError, InputError
from bench.scenario import WorkloadModel

# Relative on purpose: every runtime starts the workload in its trial's io dir.
METRICS_FILE = "metrics.yaml"
METRICS_MAX_BYTES = 1 << 20
# Without --oomable stress-ng respawns an OOM-killed worker and still reports success
# (seen under docker -m 256m: oom_kill 64, exit 0); see docs/host-notes.md.
OOMABLE_STRESSORS = frozenset({"vm", "bigheap", "malloc"})
# Scratch files of these go to --temp-path; "." keeps them in the io dir, inside the limits.
SCRATCH_STRESSORS = frozenset({"hdd", "iomix"})
# Unpinned, stress-ng's vm picks a random madvise() advice per mapping: with "hugepage" a
# 2 s `--vm-bytes 256m` run did 0 bogo-ops here (42,000/s with "normal"), and a 128 MiB
# memory aggressor faulted at 57 MB/s and never reached its limit (docs/host-notes.md,
# "stress-ng's own randomness"). The same workload in every trial needs one advice.
PINNED_OPTIONS: dict[str, dict[str, str]] = {"vm": {"vm-madvise": "normal"}}


@dataclass(frozen=True)
class Throughput:
    """A workload's own measure of work done per second."""

    value: float
    unit: str


def build_argv(workload: WorkloadModel) -> tuple[str, ...]:
    """The argv that runs `workload`, with an absolute program path valid on host and image."""
    if workload.command is not None:
        return (str(_program(workload.command[0], workload.name)), *workload.command[1:])
    assert workload.stressor is not None  # the model guarantees one of the two
    options: dict[str, int | float | str | bool] = {}
    if workload.stressor in OOMABLE_STRESSORS:
        options["oomable"] = True
    if workload.stressor in SCRATCH_STRESSORS:
        options["temp-path"] = "."
    options.update(PINNED_OPTIONS.get(workload.stressor, {}))
    options.update(workload.options)  # the scenario may say oomable = false
    argv = [
        str(_stress_ng()),
        f"--{workload.stressor}",
        str(workload.workers),
        "--timeout",
        f"{int(workload.duration_s)}s",
        "--metrics",
        "--yaml",
        METRICS_FILE,
    ]
    for key, value in options.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not False:
            argv += [f"--{key}", _option_text(value)]
    return tuple(argv)


def binaries(workload: WorkloadModel) -> list[Path]:
    """Absolute host paths of the programs the workload executes (copied into the image)."""
    if workload.service is not None:
        from bench.service import tier_kinds

        return [path for kind in tier_kinds(workload) for path in kind.binaries]
    return [Path(build_argv(workload)[0])]


def data_paths(workload: WorkloadModel) -> list[Path]:
    """Files or directories a service's server reads besides its libraries (copied as-is)."""
    if workload.service is None:
        return []
    from bench.service import tier_kinds

    return [path for kind in tier_kinds(workload) for path in kind.data_paths]


def parse_metrics(io_dir: Path, workload: WorkloadModel) -> Throughput | None:
    """stress-ng's bogo-ops/s (real time) summed over its stressors; None if absent or garbled."""
    if workload.stressor is None:
        return None
    try:
        with (io_dir / METRICS_FILE).open("rb") as file:
            data = yaml.safe_load(file.read(METRICS_MAX_BYTES))
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return None  # ValueError covers bad UTF-8; a missing file means the run died early
    entries = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    rates = [
        entry.get("bogo-ops-per-second-real-time") for entry in entries if isinstance(entry, dict)
    ]
    numbers = [
        float(rate)
        for rate in rates
        if isinstance(rate, int | float) and not isinstance(rate, bool) and math.isfinite(rate)
    ]
    if not numbers or any(number < 0 for number in numbers):
        return None
    return Throughput(value=sum(numbers), unit="bogo-ops/s")


def last_lines(path: Path, count: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `count` lines of a (possibly huge or binary) output file; [] if unreadable."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - max_bytes))
            tail = file.read(max_bytes)
    except OSError:
        return []
    lines = tail.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut by the bounded read
    return lines[-count:] if count > 0 else []


def _stress_ng() -> Path:
    found = shutil.which("stress-ng")
    if found is None:
        raise BenchError(
            "stress-ng is not installed or not on PATH; install it "
            "(Debian/Ubuntu: apt-get install stress-ng) or use a `command` workload."
        )
    return Path(found).absolute()


def _program(program: str, workload_name: str) -> Path:
    """An absolute, executable program path for a command workload."""
    found = program if os.path.isabs(program) else shutil.which(program)
    if found is None or not os.access(found, os.X_OK) or not os.path.isfile(found):
        raise InputError(
            f"workload {workload_name!r}: program {program!r} is not an executable file"
            f"{'' if os.path.isabs(program) else ' on PATH'}; install it or give its absolute path."
        )
    return Path(found)


def _option_text(value: int | float | str) -> str:
    if isinstance(value, float):
        # stress-ng parses plain decimals, not "1e-05"; drop a trailing ".0" too.
        return f"{value:f}".rstrip("0").rstrip(".") or "0"
    return str(value)
