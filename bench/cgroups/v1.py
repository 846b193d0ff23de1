"""Reader of a cgroup v1 cgroup spread over controller hierarchies (kernel doc: cgroup-v1/)."""

from __future__ import annotations

import os

from bench.cgroups.fileio import FdReader, key_ints, pread_all
from bench.cgroups.model import CgroupSnapshot

# cpuacct.stat counts USER_HZ ticks (cgroup-v1/cpuacct.rst).
NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")

# Keys in the order the kernel prints them (mm/memcontrol-v1.c, kernel/sched/core.c).
_MEM_KEYS = (b"\ntotal_cache ", b"\ntotal_rss ", b"\ntotal_inactive_file ")
_TICK_KEYS = (b"\nuser ", b"\nsystem ")
_CPU_KEYS = (b"\nnr_periods ", b"\nnr_throttled ", b"\nthrottled_time ")


class V1Reader(FdReader):
    """Reads cpuacct, cpu, memory, pids and blkio files through kept-open descriptors.

    cpuacct.usage and memory.usage_in_bytes/memory.stat are required; pids and blkio
    are optional (0 when not mounted). v1 has no pressure files: those fields are None.
    """

    version = "v1"
    io_read_key = b" Read "
    io_write_key = b" Write "

    def _open_files(self) -> None:
        d = self.location.dir_for
        self._cpuacct_usage = self._open_required(d("cpuacct"), "cpuacct.usage")
        self._mem_current = self._open_required(d("memory"), "memory.usage_in_bytes")
        self._mem_stat = self._open_required(d("memory"), "memory.stat")
        self._cpuacct_stat = self._open(d("cpuacct"), "cpuacct.stat")
        self._cpu_stat = self._open(d("cpu"), "cpu.stat")
        self._mem_max = self._open(d("memory"), "memory.max_usage_in_bytes")
        self._oom_events = self._open(d("memory"), "memory.oom_control")
        self._pids_current = self._open(d("pids"), "pids.current")
        self._pids_peak = self._open(d("pids"), "pids.peak")  # v1 too since kernel 6.13
        # The _recursive file includes child cgroups, as cpuacct.usage and total_* do.
        self._io = self._open(d("blkio"), "blkio.throttle.io_service_bytes_recursive")
        if self._io is None:
            self._io = self._open(d("blkio"), "blkio.throttle.io_service_bytes")

    def _read(self) -> CgroupSnapshot:
        # The sampler's hot path, written for speed: one pread per file, single-number
        # files without a size loop (they fit in 32 bytes), keys in file order.
        pread = os.pread
        usage = int(pread(self._mem_current, 32, 0))
        cache, rss, inactive_file = key_ints(pread_all(self._mem_stat, 2048), _MEM_KEYS)
        fd = self._cpuacct_stat
        user, system = (0, 0) if fd is None else key_ints(pread(fd, 256, 0), _TICK_KEYS)
        fd = self._cpu_stat
        periods, throttled, throttled_ns = (
            (0, 0, 0) if fd is None else key_ints(pread_all(fd, 1024), _CPU_KEYS)
        )
        fd = self._mem_max
        return CgroupSnapshot(
            int(pread(self._cpuacct_usage, 32, 0)),
            user * NS_PER_TICK,
            system * NS_PER_TICK,
            periods,
            throttled,
            throttled_ns,
            usage,
            None if fd is None else int(pread(fd, 32, 0)),
            rss,
            cache,
            *self._shared_counts(usage, inactive_file),
            None,
            None,
            None,
            None,
        )

    def _cpu_usage_ns(self) -> int:
        return int(os.pread(self._cpuacct_usage, 32, 0))
