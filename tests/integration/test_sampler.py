"""bench.sampler.Sampler on a real cgroup: cadence, detail ticks, first and final samples.

Runs on this host (v1) and inside the cgroup v2 VM (tests/v2vm), so both readers'
read_core() paths are driven through the sampler.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from bench.cgroups import CgroupGone, CgroupReader, create_cgroup, open_reader
from bench.cgroups.manage import can_create_cgroups
from bench.cgroups.model import CORE_FIELDS, SNAPSHOT_FIELDS
from bench.sampler import MISSING, SampleColumns, Sampler
from bench.spec import Limits
from tests.helpers import require, require_root

pytestmark = pytest.mark.integration

PREFIX = f"bench-s{os.getpid()}-"
INTERVAL_S = 0.01
DETAIL_S = 0.05  # every 5th tick reads every metric
RUN_S = 0.6
BUSY_ARGV = ["/bin/sh", "-c", "while :; do :; done"]


@pytest.fixture
def busy_reader() -> Iterator[CgroupReader]:
    """A reader of a fresh bench cgroup with one busy shell in it; removed after."""
    require_root()
    ok, why = can_create_cgroups()
    require(ok, f"cannot create cgroups here: {why}")
    cgroup = create_cgroup(f"{PREFIX}busy", Limits())
    proc = subprocess.Popen(BUSY_ARGV, preexec_fn=cgroup.join_current_process)
    reader = open_reader(cgroup.location)
    try:
        yield reader
    finally:
        reader.close()
        cgroup.kill_all()
        proc.wait()
        cgroup.remove()


def sample(reader: CgroupReader, interval_s: float, detail_s: float) -> SampleColumns:
    """First sample at t0, RUN_S of ticks, a final one from finish(): what the runner does."""
    sampler = Sampler(interval_s, detail_s)
    with sampler:
        sampler.add("t", reader, time.monotonic(), reader.read())
        time.sleep(RUN_S)
        columns, last = sampler.finish("t")
    assert last is not None and last.cpu_usage_ns == columns.values["cpu_usage_ns"][-1]
    return columns


def detail_rows(columns: SampleColumns) -> list[bool]:
    """Per row: whether it holds every metric (memory.stat's anon is read only then)."""
    return [value != MISSING for value in columns.values["mem_anon_bytes"]]


def test_core_ticks_between_detail_ticks(busy_reader: CgroupReader) -> None:
    columns = sample(busy_reader, INTERVAL_S, DETAIL_S)
    full = detail_rows(columns)
    assert len(columns) >= 0.8 * RUN_S / INTERVAL_S
    assert full[0] and full[-1], "the first and final samples read every metric"
    # Every tick in between reads the core metrics; every 5th reads them all.
    for name in CORE_FIELDS:
        assert MISSING not in columns.values[name], name
    ticks = full[1:-1]
    assert ticks.count(False) > 0
    full_times = [t for t, is_full in zip(columns.t_s[1:-1], ticks, strict=True) if is_full]
    gaps = [b - a for a, b in itertools.pairwise(full_times)]
    assert len(gaps) >= 0.7 * RUN_S / DETAIL_S
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(DETAIL_S, abs=0.2 * DETAIL_S)
    # A core tick misses exactly the detail metrics, nothing else.
    core_row = full.index(False)
    for name in SNAPSHOT_FIELDS:
        value = columns.values[name][core_row]
        assert (value != MISSING) == (name in CORE_FIELDS), name
    # Counters from core and full ticks are one series: CPU time never goes back.
    usage = list(columns.values["cpu_usage_ns"])
    assert usage == sorted(usage) and usage[-1] > usage[0]


def test_detail_at_or_below_the_interval_reads_everything(busy_reader: CgroupReader) -> None:
    columns = sample(busy_reader, INTERVAL_S, INTERVAL_S / 2)
    assert all(detail_rows(columns)) and len(columns) > 10


def test_read_core_of_a_removed_cgroup_is_gone() -> None:
    require_root()
    ok, why = can_create_cgroups()
    require(ok, f"cannot create cgroups here: {why}")
    cgroup = create_cgroup(f"{PREFIX}gone", Limits())
    reader = open_reader(cgroup.location)
    try:
        assert reader.read_core().pids_current == 0
        cgroup.remove()
        with pytest.raises(CgroupGone):
            reader.read_core()
    finally:
        reader.close()
        cgroup.remove()  # idempotent
