"""Find and remove everything bench created (containers, cgroups, images, services)."""

from __future__ import annotations

from bench.errors import BenchError
from bench.runtimes import RUNTIME_CLASSES, get_runtime


def find_leftovers() -> dict[str, list[str]]:
    """Leftovers per runtime, for the warning at the start of `bench run`."""
    found: dict[str, list[str]] = {}
    for name in RUNTIME_CLASSES:
        runtime = get_runtime(name)
        try:
            if runtime.available().ok:
                left = runtime.leftovers()
                if left:
                    found[name] = left
        except BenchError:
            continue
        finally:
            runtime.close()
    return found


def collect_garbage() -> list[str]:
    """Remove leftovers of every runtime; one line of what was done per runtime."""
    lines = []
    for name in RUNTIME_CLASSES:
        runtime = get_runtime(name)
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
