"""Typed results of reading a cgroup, shared by the v1 and v2 readers."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, Protocol

from bench.errors import CgroupError

HostCgroupVersion = Literal["v1", "v2", "hybrid"]
HierarchyVersion = Literal["v1", "v2"]


class CgroupGone(CgroupError):
    """The cgroup was removed (its workload ended and the runtime cleaned up)."""


@dataclass(frozen=True)
class CgroupLocation:
    """Where one cgroup's files are.

    v1: `dirs` maps each controller ("cpu", "cpuacct", "memory", "pids", "blkio",
    "cpuset") to its directory. v2: `dirs` is {"unified": directory}.
    """

    version: HierarchyVersion
    dirs: dict[str, Path]

    def dir_for(self, controller: str) -> Path | None:
        if self.version == "v2":
            return self.dirs["unified"]
        return self.dirs.get(controller)

    @property
    def display(self) -> str:
        """One path for tables and logs (v2 directory or the v1 memory directory)."""
        path = self.dir_for("memory") or next(iter(self.dirs.values()))
        return str(path)


# Not frozen, on purpose: a frozen dataclass's __init__ took 2.3 us here against 0.44 us,
# a tenth of the 25 us budget of one full cgroup read in the sampler. Treat as read-only.
@dataclass(slots=True)
class CgroupSnapshot:
    """Every metric of the README's metrics table at one instant; counters are cumulative.

    None means the kernel does not provide the metric (e.g. memory.peak before 5.19,
    pressure on v1). Fields are positional in this order for the readers' speed.
    """

    cpu_usage_ns: int
    cpu_user_ns: int
    cpu_system_ns: int
    cpu_nr_periods: int
    cpu_nr_throttled: int
    cpu_throttled_ns: int
    mem_current_bytes: int
    mem_peak_bytes: int | None
    mem_anon_bytes: int
    mem_file_bytes: int
    mem_working_set_bytes: int
    pids_current: int
    pids_peak: int | None
    oom_kill_count: int
    io_read_bytes: int
    io_write_bytes: int
    cpu_pressure_some_us: int | None
    mem_pressure_some_us: int | None
    mem_pressure_full_us: int | None
    io_pressure_some_us: int | None


SNAPSHOT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CgroupSnapshot))


@dataclass(slots=True)
class CoreSnapshot:
    """The three metrics the sampler reads at every tick: one cheap file each."""

    cpu_usage_ns: int
    mem_current_bytes: int
    pids_current: int


CORE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CoreSnapshot))


class CgroupReader(Protocol):
    """Reads one cgroup's metrics through descriptors kept open between reads."""

    location: CgroupLocation

    def read(self) -> CgroupSnapshot:
        """Read every metric now; raises CgroupGone when the cgroup was removed."""
        ...

    def read_core(self) -> CoreSnapshot:
        """Read only CPU usage, current memory and pids; CgroupGone as read()."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CgroupTotals:
    """What a cgroup used over a trial, in the result's units; None where not known."""

    cpu_s: float | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_ns: int | None = None
    oom_kills: int | None = None
    mem_peak_bytes: int | None = None
    # True when the kernel keeps no peak (v2's memory.peak came in 5.19) and the peak is the
    # largest sampled memory.current, which can miss a spike between two samples.
    mem_peak_from_samples: bool = False
    pids_peak: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None


def cgroup_totals(
    first: CgroupSnapshot,
    final: CgroupSnapshot | None,
    *,
    sampled_mem_max_bytes: int | None = None,
    sampled_pids_max: int | None = None,
) -> CgroupTotals:
    """Totals from the trial's first and final full reads (final is None once the cgroup
    is gone); a peak the kernel does not keep falls back to the largest sampled value."""
    mem_peak = final.mem_peak_bytes if final is not None else None
    pids_peak = final.pids_peak if final is not None else None
    from_samples = mem_peak is None and sampled_mem_max_bytes is not None
    if from_samples:
        mem_peak = sampled_mem_max_bytes
    if pids_peak is None:
        pids_peak = sampled_pids_max
    if final is None:
        return CgroupTotals(
            mem_peak_bytes=mem_peak, mem_peak_from_samples=from_samples, pids_peak=pids_peak
        )
    return CgroupTotals(
        cpu_s=final.cpu_usage_ns / 1e9,
        cpu_user_s=final.cpu_user_ns / 1e9,
        cpu_sys_s=final.cpu_system_ns / 1e9,
        cpu_nr_throttled=final.cpu_nr_throttled,
        cpu_throttled_ns=final.cpu_throttled_ns,
        # The counter counts over the cgroup's whole life: the trial's kills are those
        # between its own first and final read.
        oom_kills=final.oom_kill_count - first.oom_kill_count,
        mem_peak_bytes=mem_peak,
        mem_peak_from_samples=from_samples,
        pids_peak=pids_peak,
        io_read_bytes=final.io_read_bytes,
        io_write_bytes=final.io_write_bytes,
    )
