"""A trial's totals from its first and final cgroup reads (bench.cgroups.model.cgroup_totals)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from bench.cgroups import CgroupLocation, CgroupSnapshot, open_reader
from bench.cgroups.model import CgroupTotals, cgroup_totals
from bench.results import TrialResult

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroup"


@pytest.fixture
def final(tmp_path: Path) -> CgroupSnapshot:
    """A real read of the v2 fixture tree."""
    reader = open_reader(
        CgroupLocation("v2", {"unified": Path(shutil.copytree(FIXTURES / "v2", tmp_path / "v2"))})
    )
    try:
        return reader.read()
    finally:
        reader.close()


def test_counters_in_seconds_and_oom_kills_since_the_first_read(final: CgroupSnapshot) -> None:
    first = dataclasses.replace(final, oom_kill_count=3)
    last = dataclasses.replace(final, oom_kill_count=5)
    totals = cgroup_totals(first, last, sampled_mem_max_bytes=1, sampled_pids_max=1)
    assert totals.cpu_s == final.cpu_usage_ns / 1e9
    assert totals.cpu_user_s == final.cpu_user_ns / 1e9
    assert totals.cpu_sys_s == final.cpu_system_ns / 1e9
    assert totals.cpu_throttled_ns == final.cpu_throttled_ns
    assert totals.oom_kills == 2
    # The kernel's peaks win over the samples, which can miss a spike between two ticks.
    assert (totals.mem_peak_bytes, totals.mem_peak_from_samples) == (final.mem_peak_bytes, False)
    assert totals.pids_peak == final.pids_peak
    assert (totals.io_read_bytes, totals.io_write_bytes) == (
        final.io_read_bytes,
        final.io_write_bytes,
    )


def test_peaks_the_kernel_does_not_keep_come_from_the_samples(final: CgroupSnapshot) -> None:
    old_kernel = dataclasses.replace(final, mem_peak_bytes=None, pids_peak=None)
    totals = cgroup_totals(final, old_kernel, sampled_mem_max_bytes=4096, sampled_pids_max=7)
    assert (totals.mem_peak_bytes, totals.mem_peak_from_samples) == (4096, True)
    assert totals.pids_peak == 7
    no_samples = cgroup_totals(final, old_kernel)
    assert (no_samples.mem_peak_bytes, no_samples.mem_peak_from_samples) == (None, False)


def test_without_a_final_read_only_the_sampled_peaks_are_known(final: CgroupSnapshot) -> None:
    totals = cgroup_totals(final, None, sampled_mem_max_bytes=4096, sampled_pids_max=7)
    assert (totals.mem_peak_bytes, totals.mem_peak_from_samples, totals.pids_peak) == (
        4096,
        True,
        7,
    )
    assert totals.cpu_s is None and totals.oom_kills is None


def test_every_total_is_a_result_column_of_the_same_type() -> None:
    # bench.trial copies the totals into the row by field name.
    columns = {field.name: field.type for field in dataclasses.fields(TrialResult)}
    for total in dataclasses.fields(CgroupTotals):
        assert columns.get(total.name) == total.type, total.name
