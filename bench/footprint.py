"""Memory footprint of a runtime's own processes (daemons, shims, monitors) via psutil."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Footprint:
    rss_bytes: int
    pss_bytes: int
    processes: int


def measure_footprint(pids: list[int]) -> Footprint:
    """Sum RSS and PSS over `pids` (zero when the runtime has no process of its own now)."""
    import psutil

    rss = pss = count = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += info.rss
        # PSS charges shared pages pro rata, so N shims are not counted N times.
        pss += getattr(info, "pss", info.rss)
        count += 1
    return Footprint(rss, pss, count)


def pids_named(names: tuple[str, ...]) -> list[int]:
    """Pids of processes whose name starts with one of `names`."""
    import psutil

    found = []
    for process in psutil.process_iter(["name"]):
        name = process.info["name"] or ""
        if name.startswith(names):
            found.append(process.pid)
    return found
