"""Reader of a cgroup v2 directory (kernel doc: Documentation/admin-guide/cgroup-v2.rst)."""

from __future__ import annotations

import os

from bench.cgroups.fileio import FdReader, key_ints, pread_all, psi_total
from bench.cgroups.model import CgroupSnapshot

# Keys in the order the kernel prints them (mm/memcontrol.c, kernel/sched/core.c).
_MEM_KEYS = (b"\nanon ", b"\nfile ", b"\ninactive_file ")
_CPU_KEYS = (
    b"\nusage_usec ",
    b"\nuser_usec ",
    b"\nsystem_usec ",
    b"\nnr_periods ",
    b"\nnr_throttled ",
    b"\nthrottled_usec ",
)


class V2Reader(FdReader):
    """Reads cpu.stat, memory.*, pids.*, io.stat and *.pressure through kept-open descriptors.

    cpu.stat and memory.current/memory.stat are required; every other file is optional
    and gives None (peaks, pressure) or 0 (counters) when the kernel lacks it.
    """

    version = "v2"
    io_read_key = b"rbytes="
    io_write_key = b"wbytes="

    def _open_files(self) -> None:
        d = self.location.dir_for("unified")
        self._cpu_stat = self._open_required(d, "cpu.stat")
        self._mem_current = self._open_required(d, "memory.current")
        self._mem_stat = self._open_required(d, "memory.stat")
        self._mem_peak = self._open(d, "memory.peak")  # kernel 5.19+
        self._oom_events = self._open(d, "memory.events")
        self._pids_current = self._open(d, "pids.current")
        self._pids_peak = self._open(d, "pids.peak")  # kernel 6.1+
        self._io = self._open(d, "io.stat")
        self._cpu_psi = self._open(d, "cpu.pressure")
        self._mem_psi = self._open(d, "memory.pressure")
        self._io_psi = self._open(d, "io.pressure")

    def _read(self) -> CgroupSnapshot:
        # The sampler's hot path, written for speed: one pread per file, single-number
        # files without a size loop (they fit in 32 bytes), keys in file order.
        pread = os.pread
        current = int(pread(self._mem_current, 32, 0))
        anon, file, inactive_file = key_ints(pread_all(self._mem_stat, 8192), _MEM_KEYS)
        usage_us, user_us, system_us, periods, throttled, throttled_us = key_ints(
            pread_all(self._cpu_stat, 1024), _CPU_KEYS
        )
        fd = self._mem_peak
        fd6 = self._mem_psi
        mem_psi = b"" if fd6 is None else pread(fd6, 256, 0)
        fd7 = self._cpu_psi
        fd8 = self._io_psi
        return CgroupSnapshot(
            usage_us * 1000,
            user_us * 1000,
            system_us * 1000,
            periods,
            throttled,
            throttled_us * 1000,
            current,
            None if fd is None else int(pread(fd, 32, 0)),
            anon,
            file,
            *self._shared_counts(current, inactive_file),
            None if fd7 is None else psi_total(pread(fd7, 256, 0), b"some"),
            psi_total(mem_psi, b"some") if mem_psi else None,
            psi_total(mem_psi, b"full") if mem_psi else None,
            None if fd8 is None else psi_total(pread(fd8, 256, 0), b"some"),
        )

    def _cpu_usage_ns(self) -> int:
        return key_ints(pread_all(self._cpu_stat, 1024), _CPU_KEYS[:1])[0] * 1000
