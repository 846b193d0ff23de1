"""The v1 and v2 readers on fixture trees copied from real cgroups (tests/fixtures/cgroup)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.cgroups import CgroupGone, CgroupLocation, open_reader
from bench.cgroups.fileio import key_ints, psi_total, sum_tokens
from bench.cgroups.v1 import NS_PER_TICK
from bench.errors import CgroupError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")


@pytest.fixture
def v2_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "v2", tmp_path / "v2"))


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "v1", tmp_path / "v1"))


def v2_location(directory: Path) -> CgroupLocation:
    return CgroupLocation("v2", {"unified": directory})


def v1_location(root: Path) -> CgroupLocation:
    return CgroupLocation("v1", {c: root / c for c in V1_CONTROLLERS})


def test_v2_reads_every_field(v2_dir: Path) -> None:
    reader = open_reader(v2_location(v2_dir))
    snap = reader.read()
    reader.close()
    assert snap.cpu_usage_ns == 7_529_913_000
    assert snap.cpu_user_ns == 4_925_754_000
    assert snap.cpu_system_ns == 2_604_158_000
    assert (snap.cpu_nr_periods, snap.cpu_nr_throttled) == (52, 46)
    assert snap.cpu_throttled_ns == 1_988_501_000
    assert snap.mem_current_bytes == 123_457_536
    assert snap.mem_peak_bytes == 123_658_240
    assert snap.mem_anon_bytes == 106_987_520
    assert snap.mem_file_bytes == 15_208_448
    assert snap.mem_working_set_bytes == 123_457_536 - 12_849_152  # current - inactive_file
    assert (snap.pids_current, snap.pids_peak) == (4, 4)
    assert snap.oom_kill_count == 0
    assert snap.io_read_bytes == 1_052_672 + 4_096  # summed over both devices
    assert snap.io_write_bytes == 33_558_528 + 8_192
    assert snap.cpu_pressure_some_us == 1_339_786
    assert (snap.mem_pressure_some_us, snap.mem_pressure_full_us) == (0, 0)
    assert snap.io_pressure_some_us == 0


def test_v1_reads_every_field(v1_root: Path) -> None:
    reader = open_reader(v1_location(v1_root))
    snap = reader.read()
    reader.close()
    assert snap.cpu_usage_ns == 1_254_474_439
    assert snap.cpu_user_ns == 87 * NS_PER_TICK
    assert snap.cpu_system_ns == 37 * NS_PER_TICK
    assert (snap.cpu_nr_periods, snap.cpu_nr_throttled, snap.cpu_throttled_ns) == (25, 0, 0)
    assert snap.mem_current_bytes == 109_146_112
    assert snap.mem_peak_bytes == 142_290_944
    assert snap.mem_anon_bytes == 104_022_016  # total_rss, not total_rss_huge
    assert snap.mem_file_bytes == 3_948_544  # total_cache
    assert snap.mem_working_set_bytes == 109_146_112 - 1_642_496  # - total_inactive_file
    assert (snap.pids_current, snap.pids_peak) == (5, 5)
    assert snap.oom_kill_count == 0
    assert snap.io_read_bytes == 1_052_672 + 4_096  # per-device Read lines, not "Total"
    assert snap.io_write_bytes == 33_558_528 + 8_192
    assert snap.cpu_pressure_some_us is None  # v1 has no PSI per cgroup
    assert snap.mem_pressure_some_us is None


def test_readers_see_new_contents_on_every_read(v2_dir: Path, v1_root: Path) -> None:
    """pread from offset 0 on kept-open fds: a rewrite of the file shows on the next read."""
    v2 = open_reader(v2_location(v2_dir))
    v1 = open_reader(v1_location(v1_root))
    (v2_dir / "memory.events").write_bytes(
        b"low 0\nhigh 0\nmax 17\noom 3\noom_kill 3\noom_group_kill 0\n"
    )
    (v1_root / "memory" / "memory.oom_control").write_bytes(
        b"oom_kill_disable 0\nunder_oom 1\noom_kill 64\n"
    )
    assert v2.read().oom_kill_count == 3
    assert v1.read().oom_kill_count == 64
    v1.close()
    v2.close()


def test_working_set_is_clamped_at_zero(v2_dir: Path) -> None:
    (v2_dir / "memory.current").write_bytes(b"4096\n")  # below inactive_file
    reader = open_reader(v2_location(v2_dir))
    assert reader.read().mem_working_set_bytes == 0
    reader.close()


def test_v2_optional_files_missing(v2_dir: Path) -> None:
    """Old kernels or undelegated controllers: None for peaks/pressure, 0 for counters."""
    for name in ("memory.peak", "pids.current", "pids.peak", "io.stat", "memory.events"):
        (v2_dir / name).unlink()
    for name in ("cpu.pressure", "memory.pressure", "io.pressure"):
        (v2_dir / name).unlink()
    # cpu controller not enabled: cpu.stat holds only the usage lines.
    (v2_dir / "cpu.stat").write_bytes(b"usage_usec 10\nuser_usec 6\nsystem_usec 4\n")
    reader = open_reader(v2_location(v2_dir))
    snap = reader.read()
    reader.close()
    assert snap.mem_peak_bytes is None and snap.pids_peak is None
    assert (snap.pids_current, snap.oom_kill_count, snap.io_read_bytes) == (0, 0, 0)
    assert snap.cpu_pressure_some_us is None and snap.mem_pressure_full_us is None
    assert (snap.cpu_usage_ns, snap.cpu_nr_periods, snap.cpu_throttled_ns) == (10_000, 0, 0)


def test_v1_without_pids_and_blkio_controllers(v1_root: Path) -> None:
    location = CgroupLocation("v1", {c: v1_root / c for c in ("cpu", "cpuacct", "memory")})
    reader = open_reader(location)
    snap = reader.read()
    reader.close()
    assert (snap.pids_current, snap.pids_peak, snap.io_read_bytes) == (0, None, 0)
    assert snap.mem_peak_bytes == 142_290_944


def test_missing_required_file_says_what_to_enable(v2_dir: Path) -> None:
    (v2_dir / "memory.current").unlink()
    with pytest.raises(CgroupError, match=r"memory\.current.*subtree_control"):
        open_reader(v2_location(v2_dir))


def test_missing_directory_is_cgroup_gone(tmp_path: Path) -> None:
    with pytest.raises(CgroupGone):
        open_reader(v2_location(tmp_path / "removed"))
    with pytest.raises(CgroupGone):
        open_reader(v1_location(tmp_path / "removed"))


def test_closed_reader_refuses_to_read(v2_dir: Path) -> None:
    reader = open_reader(v2_location(v2_dir))
    reader.close()
    with pytest.raises(CgroupError, match="closed"):
        reader.read()


def test_large_file_is_read_whole(v2_dir: Path) -> None:
    """io.stat with many devices is larger than the first pread's buffer."""
    lines = [f"8:{i} rbytes=1000 wbytes=10 rios=1 wios=1 dbytes=0 dios=0\n" for i in range(500)]
    (v2_dir / "io.stat").write_text("".join(lines))
    reader = open_reader(v2_location(v2_dir))
    snap = reader.read()
    reader.close()
    assert (snap.io_read_bytes, snap.io_write_bytes) == (500_000, 5_000)


def test_key_ints_matches_whole_keys_only() -> None:
    data = b"rss_huge 7\nrss 5\ntotal_rss_huge 9\ntotal_rss 11\n"
    assert key_ints(data, (b"\nrss ", b"\ntotal_rss ")) == [5, 11]
    assert key_ints(data, (b"\ntotal_rss ", b"\nrss ")) == [11, 5]  # out of order
    assert key_ints(data, (b"\nabsent ",)) == [0]
    assert key_ints(b"usage_usec 3", (b"\nusage_usec ",)) == [3]  # first line, no newline


def test_sum_tokens_and_psi() -> None:
    assert sum_tokens(b"8:0 rbytes=5 wbytes=1\n8:16 rbytes=7 wbytes=2\n", b"rbytes=") == 12
    assert sum_tokens(b"", b"rbytes=") == 0
    psi = b"some avg10=0.00 avg60=0.00 avg300=0.00 total=42\nfull avg10=0 total=40\n"
    assert (psi_total(psi, b"some"), psi_total(psi, b"full")) == (42, 40)
    assert psi_total(b"some avg10=0.00 total=1\n", b"full") is None


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_read_core_agrees_with_read(version: str, v2_dir: Path, v1_root: Path) -> None:
    """The sampler's between-detail ticks read the same three values a full read gives."""
    location = v1_location(v1_root) if version == "v1" else v2_location(v2_dir)
    reader = open_reader(location)
    full, core = reader.read(), reader.read_core()
    reader.close()
    assert (core.cpu_usage_ns, core.mem_current_bytes, core.pids_current) == (
        full.cpu_usage_ns,
        full.mem_current_bytes,
        full.pids_current,
    )
    assert core.cpu_usage_ns > 0 and core.mem_current_bytes > 0 and core.pids_current > 0
    with pytest.raises(CgroupError, match="closed"):
        reader.read_core()
