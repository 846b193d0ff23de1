"""Cgroup layer: locate a process's cgroup, read it fast, create cgroups for bare runs."""

from __future__ import annotations

from bench.cgroups.locate import host_cgroup_version, locate
from bench.cgroups.manage import (
    ManagedCgroup,
    can_create_cgroups,
    create_cgroup,
    list_bench_cgroups,
    remove_bench_cgroups,
)
from bench.cgroups.model import CgroupGone, CgroupLocation, CgroupReader, CgroupSnapshot
from bench.cgroups.v1 import V1Reader
from bench.cgroups.v2 import V2Reader


def open_reader(location: CgroupLocation) -> CgroupReader:
    """A reader of `location` keeping its files open; CgroupGone if it no longer exists."""
    if location.version == "v2":
        return V2Reader(location)
    return V1Reader(location)


__all__ = [
    "CgroupGone",
    "CgroupLocation",
    "CgroupReader",
    "CgroupSnapshot",
    "ManagedCgroup",
    "can_create_cgroups",
    "create_cgroup",
    "host_cgroup_version",
    "list_bench_cgroups",
    "locate",
    "open_reader",
    "remove_bench_cgroups",
]
