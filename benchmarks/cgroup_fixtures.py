"""Real bench cgroups with a process in each, for the measuring-cost benchmarks (root only)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.cgroups import ManagedCgroup, can_create_cgroups, create_cgroup
from bench.spec import Limits

# Unique per benchmark process: other sessions may run bench on this host meanwhile.
PREFIX = f"bench-m{os.getpid()}-"
BUSY_ARGV = ("/bin/sh", "-c", "while :; do :; done")
SLEEP_ARGV = ("/bin/sleep", "3600")


@dataclass
class Populated:
    cgroup: ManagedCgroup
    proc: subprocess.Popen[bytes]


def require_cgroups() -> None:
    """Skip unless this process may create cgroups (root, a writable hierarchy)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    ok, why = can_create_cgroups()
    if not ok:
        pytest.skip(f"cannot create cgroups here: {why}")


@contextlib.contextmanager
def populated_cgroups(count: int, argv: tuple[str, ...], tag: str) -> Iterator[list[Populated]]:
    """`count` fresh bench cgroups, each holding one process running `argv`; all removed after."""
    made: list[Populated] = []
    try:
        for i in range(count):
            cgroup = create_cgroup(f"{PREFIX}{tag}-{i}", Limits())
            try:
                proc = subprocess.Popen(
                    argv, preexec_fn=cgroup.join_current_process, stdout=subprocess.DEVNULL
                )
            except BaseException:
                cgroup.remove()
                raise
            made.append(Populated(cgroup, proc))
        yield made
    finally:
        for item in made:
            item.cgroup.kill_all()
            item.proc.wait()
            item.cgroup.remove()
