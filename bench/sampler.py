"""Fixed-cadence sampling of one or many cgroups on a background thread."""

from __future__ import annotations

import os
import threading
import time
from array import array
from dataclasses import dataclass, field

from bench.cgroups.model import (
    CORE_FIELDS,
    SNAPSHOT_FIELDS,
    CgroupReader,
    CgroupSnapshot,
    CoreSnapshot,
)
from bench.errors import CgroupError

# At this interval or shorter the sampler thread asks for SCHED_FIFO: on a loaded host
# (load 3 on 2 cores) CFS woke a 1 ms sleeper up to 1.2 ms late at the 99th percentile,
# SCHED_FIFO within 0.08 ms (benchmarks/test_sampler_rate.py). The thread sleeps
# between ticks and reads for microseconds, so it takes nothing from the workload it
# would not take anyway; the kernel's RT throttling caps it if a tick ever overran.
REALTIME_BELOW_S = 0.01
REALTIME_PRIORITY = 1

# Every metric is read at most this often and at each trial's first and last sample; the
# ticks between read only CPU usage, current memory and pids (CoreSnapshot). On v1 the
# full set is 10 files, and at 100 cgroups x 10 Hz reading them all every tick cost 5.3 %
# of a core against 3 % budgeted: each cold read is a ~3 us syscall, memory.stat
# ~12 us. Totals never depend on this: they come from the final full read.
DETAIL_INTERVAL_S = 1.0

DETAIL_FIELDS = tuple(name for name in SNAPSHOT_FIELDS if name not in CORE_FIELDS)

# Columns hold int64; a metric the kernel does not provide (None) or a tick did not read
# is stored as this sentinel, which bench.store.samples_table turns into a null.
MISSING = -1


@dataclass
class SampleColumns:
    """Samples of one cgroup, column by column: `t_s` plus one int column per metric."""

    t0: float
    t_s: array[float] = field(default_factory=lambda: array("d"))
    values: dict[str, array[int]] = field(
        default_factory=lambda: {name: array("q") for name in SNAPSHOT_FIELDS}
    )

    def append(self, now: float, snapshot: CgroupSnapshot | CoreSnapshot) -> None:
        """One row; metrics a CoreSnapshot lacks are stored as missing."""
        self.t_s.append(now - self.t0)
        values = self.values
        if isinstance(snapshot, CoreSnapshot):
            values["cpu_usage_ns"].append(snapshot.cpu_usage_ns)
            values["mem_current_bytes"].append(snapshot.mem_current_bytes)
            values["pids_current"].append(snapshot.pids_current)
            for name in DETAIL_FIELDS:
                values[name].append(MISSING)
            return
        for name, column in values.items():
            value = getattr(snapshot, name)
            column.append(MISSING if value is None else value)

    def __len__(self) -> int:
        return len(self.t_s)

    def largest(self, name: str) -> int | None:
        """The largest value of metric `name` that was read; None when none was."""
        return max((value for value in self.values[name] if value != MISSING), default=None)


@dataclass
class _Target:
    reader: CgroupReader
    columns: SampleColumns


class Sampler:
    """Reads every registered cgroup each `interval_s`, on deadlines that never drift.

    Deadlines are start + k * interval on the monotonic clock; a tick that is late by a
    whole interval is skipped (and counted) instead of being bunched up. Every metric is
    read each `detail_interval_s` (rounded to whole ticks); other ticks read the core three.
    """

    def __init__(self, interval_s: float, detail_interval_s: float = DETAIL_INTERVAL_S) -> None:
        if interval_s <= 0 or detail_interval_s <= 0:
            raise ValueError("interval_s and detail_interval_s must be positive")
        self.interval_s = interval_s
        self.detail_every_ticks = max(1, round(detail_interval_s / interval_s))
        self.missed_ticks = 0
        self.realtime = False  # whether the thread got SCHED_FIFO (short intervals only)
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self, key: str, reader: CgroupReader, t0: float, first: CgroupSnapshot | None = None
    ) -> None:
        """Start sampling `reader` under `key`; `t0` (monotonic) is the trial's t_s = 0.

        `first`, when given, is a snapshot read at `t0` and becomes the first sample.
        """
        columns = SampleColumns(t0)
        if first is not None:
            columns.append(t0, first)
        with self._lock:
            self._targets[key] = _Target(reader, columns)

    def remove(self, key: str) -> SampleColumns:
        """Stop sampling `key` and hand back what was collected."""
        with self._lock:
            return self._targets.pop(key).columns

    def finish(self, key: str) -> tuple[SampleColumns, CgroupSnapshot | None]:
        """Stop sampling `key` after a last read of every metric: the samples and that read.

        One step under the lock, so no tick can land after the last sample. The read is
        None once the cgroup is gone; otherwise it is the trial's final totals.
        """
        with self._lock:
            target = self._targets.pop(key)
            now = time.monotonic()
            try:
                last = target.reader.read()
            except CgroupError:
                return target.columns, None
            target.columns.append(now, last)
            return target.columns, last

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        if self.interval_s <= REALTIME_BELOW_S:
            try:  # pid 0: this thread only; EPERM without CAP_SYS_NICE, then plain CFS
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
                self.realtime = True
            except OSError:
                self.realtime = False
        start = time.monotonic()
        tick = 0
        next_full_tick = self.detail_every_ticks  # tick 0 is each trial's `first` sample
        while True:
            tick += 1
            deadline = start + tick * self.interval_s
            delay = deadline - time.monotonic()
            if delay < 0:
                skipped = int(-delay // self.interval_s)
                self.missed_ticks += skipped
                tick += skipped
                delay += skipped * self.interval_s
            if self._stop.wait(max(delay, 0.0)):
                return
            full = tick >= next_full_tick
            if full:
                next_full_tick = tick + self.detail_every_ticks
            now = time.monotonic()
            with self._lock:
                for target in list(self._targets.values()):
                    self._read(target, now, full=full)

    @staticmethod
    def _read(target: _Target, now: float, *, full: bool) -> None:
        reader = target.reader
        try:
            snapshot = reader.read() if full else reader.read_core()
        except CgroupError:
            return  # the cgroup went away (workload ended); the runner has the final read
        target.columns.append(now, snapshot)
