"""Suite-wide fixture: nothing bench created may remain after the suite (checked in CI).

Helpers that tests import live in tests/helpers.py; the runtime fixtures in
tests/integration/conftest.py; the e2e runs in tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
    from bench.runtimes import get_runtime, names

    found: dict[str, list[str]] = {}
    for name in names():
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
