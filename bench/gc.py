"""Find and remove everything bench created (containers, cgroups, images, services).

A registry of live runs (one small file per running `bench run`) keeps `bench gc` from
removing what a run in progress is using: gc refuses while another run is alive, and
the leftover warning at the start of a run leaves out objects of other live runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.naming import object_prefix
from bench.runtimes import registry


def runs_dir() -> Path:
    """Where live runs register: /run/bench-runs for root, else a per-user /tmp directory."""
    if os.geteuid() == 0:
        return Path("/run/bench-runs")
    return Path(f"/tmp/bench-runs-{os.geteuid()}")


@dataclass(frozen=True)
class LiveRun:
    pid: int
    run_id: str
    prefix: str


@contextlib.contextmanager
def registered(run_id: str) -> Iterator[None]:
    """Mark a run as live for its duration (a SIGKILLed run leaves a stale file, ignored)."""
    import psutil

    directory = runs_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}-{object_prefix(run_id).rstrip('-')}.json"
    entry = {
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "run_id": run_id,
        "prefix": object_prefix(run_id),
    }
    path.write_text(json.dumps(entry))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def live_runs() -> list[LiveRun]:
    """Runs in progress on this host, other than this process's; stale entries are removed."""
    import psutil

    found = []
    directory = runs_dir()
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            alive = psutil.Process(int(entry["pid"])).create_time() == entry["started"]
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            alive = False
            entry = {}
        if not alive:
            path.unlink(missing_ok=True)
        elif entry["pid"] != os.getpid():
            found.append(LiveRun(int(entry["pid"]), str(entry["run_id"]), str(entry["prefix"])))
    return found


def not_of_live_runs(names: list[str]) -> list[str]:
    """Leftover names without those of runs still in progress."""
    prefixes = [run.prefix for run in live_runs()]
    return [name for name in names if not any(prefix in name for prefix in prefixes)]


def collect_garbage(force: bool = False) -> list[str]:
    """Remove leftovers of every runtime; one line of what was done per runtime.

    Refused while another bench run is in progress (it would lose its containers and
    image mid-run) unless `force`.
    """
    live = live_runs()
    if live and not force:
        runs = ", ".join(f"{run.run_id} (pid {run.pid})" for run in live)
        raise BenchError(
            f"bench run(s) in progress: {runs}; `bench gc` would remove their containers, "
            "cgroups and image. Wait for them to finish (or stop them with Ctrl-C), or use "
            "`bench gc --force`."
        )
    lines = []
    for name in registry.names():
        runtime = registry.get_runtime(name)
        try:
            if not runtime.available().ok:
                lines.append(f"{name}: not available, nothing to check")
                continue
            lines.append(f"{name}: removed {runtime.remove_leftovers()}")
        except BenchError as exc:
            lines.append(f"{name}: {exc}")
        finally:
            runtime.close()
    return lines
