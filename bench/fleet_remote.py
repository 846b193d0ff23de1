"""Run on a fleet host by bench's playbooks: `python -m bench.fleet_remote stop RUN_ID`.

Stops a `bench run` of this run id still going on this host (an earlier attempt, or one a
fleet run gave up): SIGINT first, so bench removes its own containers and cgroups, SIGKILL
only if it has not ended within the grace period.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

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
    if len(argv) != 2 or argv[0] != "stop":
        print("usage: python -m bench.fleet_remote stop RUN_ID", file=sys.stderr)
        return 2
    print(json.dumps({"run_id": argv[1], "stopped": stop(argv[1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
