"""Run on a fleet host by bench's playbooks (`python -m bench.fleet_remote`):

- `begin RUN_ID RUN_ROOT VERSION`: check this is bench VERSION, stop an earlier attempt of
  the run and start its directory afresh;
- `stop RUN_ID RUN_ROOT`: stop the run and remove its directory.

Stopping a `bench run` still going on this host (an earlier attempt, or one a fleet run gave
up) is SIGINT first, so bench removes its own containers and cgroups, SIGKILL only if it has
not ended within the grace period.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from bench import __version__
from bench.gc import live_runs

STOP_GRACE_S = 60.0


def _gone(pid: int) -> bool:
    """Ended (a zombie has ended too: only its parent has not reaped it yet)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop(run_id: str, grace_s: float = STOP_GRACE_S) -> list[dict[str, object]]:
    """Stop every live bench run of `run_id` on this host; what was found and how it ended."""
    stopped: list[dict[str, object]] = []
    for run in live_runs():
        if run.run_id != run_id:
            continue
        try:
            os.kill(run.pid, signal.SIGINT)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + grace_s
        while not _gone(run.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = not _gone(run.pid)
        if killed:
            os.kill(run.pid, signal.SIGKILL)
        stopped.append({"pid": run.pid, "killed": killed})
    return stopped


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "begin":
        run_id, run_root, version = argv[1], Path(argv[2]), argv[3]
        if version != __version__:
            print(f"this host runs bench {__version__}, the fleet bench {version}", file=sys.stderr)
            return 3
        stopped = stop(run_id)
        shutil.rmtree(run_root, ignore_errors=True)
        run_root.mkdir(mode=0o700, parents=True)
    elif len(argv) == 3 and argv[0] == "stop":
        run_id, run_root = argv[1], Path(argv[2])
        stopped = stop(run_id)
        shutil.rmtree(run_root, ignore_errors=True)
    else:
        print(
            "usage: python -m bench.fleet_remote begin RUN_ID RUN_ROOT VERSION\n"
            "       python -m bench.fleet_remote stop RUN_ID RUN_ROOT",
            file=sys.stderr,
        )
        return 2
    print(json.dumps({"run_id": run_id, "bench_version": __version__, "stopped": stopped}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
