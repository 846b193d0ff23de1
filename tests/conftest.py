"""Shared test helpers: skip locally when a part is missing, fail in CI instead."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI=true) when `condition` is false.

    CI installs every runtime, so a missing one there is a broken setup, not a skip.
    """
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root to create cgroups and run containers")


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_after_the_suite() -> Iterator[None]:
    """After every test (and fixture teardown): no cgroup or container bench created remains.

    Only checked in CI, where the suite owns the machine; locally other runs may be live.
    """
    yield
    if not os.environ.get("CI") or os.geteuid() != 0:
        return
    from bench.cgroups.manage import bench_parents, list_bench_cgroups

    parents = set(bench_parents())
    cgroups = [path for path in list_bench_cgroups() if path not in parents]
    assert not cgroups, f"bench cgroups left after the suite: {cgroups[:5]}"
    left = find_leftovers()
    assert not left, f"bench objects left after the suite: {left}"


def find_leftovers() -> dict[str, list[str]]:
    """Objects bench created that every answering runtime still holds, per runtime."""
    from bench.errors import BenchError
    from bench.gc import not_of_live_runs
    from bench.runtimes import RUNTIME_CLASSES, get_runtime

    found: dict[str, list[str]] = {}
    for name in RUNTIME_CLASSES:
        runtime = get_runtime(name)
        try:
            if runtime.available().ok:
                left = not_of_live_runs(runtime.leftovers())
                if left:
                    found[name] = left
        except BenchError:
            continue
        finally:
            runtime.close()
    return found
