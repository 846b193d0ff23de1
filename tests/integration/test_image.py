"""The workload image: deterministic, hashed, cached, and runnable as a rootfs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.image import (
    BUSYBOX,
    IMAGE_REPOSITORY,
    MOUNT_POINTS,
    STRESS_NG,
    WorkloadImage,
    build_image,
    cached_images,
    parse_ldd,
    remove_image_cache,
)
from tests.helpers import require, require_root

pytestmark = pytest.mark.integration


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _loader() -> Path:
    """The dynamic loader stress-ng names (its PT_INTERP), as ldd prints it."""
    out = subprocess.run(["ldd", str(STRESS_NG)], capture_output=True, text=True, check=True)
    loaders = [line.split()[0] for line in out.stdout.splitlines() if "ld-linux" in line]
    assert loaders, out.stdout
    return Path(loaders[0])


def test_digest_is_stable_across_independent_builds(
    workload_image: WorkloadImage, tmp_path: Path
) -> None:
    again = build_image(cache_dir=tmp_path / "fresh")  # a real rebuild, not a cache hit
    assert again.digest == workload_image.digest
    assert again.tarball != workload_image.tarball
    assert again.tarball.read_bytes() == workload_image.tarball.read_bytes()
    assert again.digest == _sha256(again.tarball)
    assert again.tag == f"{IMAGE_REPOSITORY}:{again.digest[:12]}"


def test_second_build_is_a_cache_hit(workload_image: WorkloadImage) -> None:
    cache_root = workload_image.tarball.parent.parent.parent
    mtime_ns = workload_image.tarball.stat().st_mtime_ns
    again = build_image(cache_dir=cache_root)
    assert again == workload_image
    assert again.tarball.stat().st_mtime_ns == mtime_ns


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    first = build_image(cache_dir=tmp_path)
    with first.tarball.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"corrupted")
    second = build_image(cache_dir=tmp_path)
    assert second.digest == first.digest
    assert _sha256(second.tarball) == first.digest


def test_binaries_and_libraries_are_hashed(workload_image: WorkloadImage) -> None:
    binaries = workload_image.binaries
    assert binaries[str(STRESS_NG)] == _sha256(STRESS_NG)
    assert binaries[str(BUSYBOX)] == _sha256(BUSYBOX)
    loader = _loader()
    assert binaries[str(loader)] == _sha256(loader)
    assert any("libc.so" in path for path in binaries)
    for host_path, digest in binaries.items():
        copied = workload_image.rootfs_dir / host_path.lstrip("/")
        assert _sha256(copied) == digest, host_path


def test_tarball_is_reproducible_and_matches_the_rootfs(workload_image: WorkloadImage) -> None:
    with tarfile.open(workload_image.tarball) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["bin/sh"].issym() and by_name["bin/sh"].linkname == "busybox"
    for point in MOUNT_POINTS:
        assert by_name[point].isdir(), point
        assert (workload_image.rootfs_dir / point).is_dir()
    assert by_name["tmp"].mode == 0o1777
    assert by_name[str(STRESS_NG).lstrip("/")].mode & 0o111
    on_disk = {
        str(p.relative_to(workload_image.rootfs_dir)) for p in workload_image.rootfs_dir.rglob("*")
    }
    assert on_disk == set(names)


def test_extra_binary_changes_the_digest(workload_image: WorkloadImage, tmp_path: Path) -> None:
    extra = Path("/usr/bin/env")
    require(extra.is_file(), f"{extra} is missing")
    with_extra = build_image([extra], cache_dir=tmp_path)
    assert with_extra.digest != workload_image.digest
    assert with_extra.binaries[str(extra)] == _sha256(extra)
    assert (with_extra.rootfs_dir / "usr/bin/env").is_file()


def test_relative_or_missing_binary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="absolute"):
        build_image([Path("stress-ng")], cache_dir=tmp_path)
    with pytest.raises(BenchError, match="missing"):
        build_image([Path("/usr/bin/bench-no-such-binary")], cache_dir=tmp_path)


def test_parse_ldd_keeps_loader_and_rejects_missing_libraries() -> None:
    text = (
        "\tlinux-vdso.so.1 (0x00007ffd5d1e8000)\n"
        "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c1a000000)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1a200000)\n"
    )
    assert parse_ldd(text) == [
        Path("/lib/x86_64-linux-gnu/libm.so.6"),
        Path("/lib64/ld-linux-x86-64.so.2"),
    ]
    with pytest.raises(BenchError, match="libgone"):
        parse_ldd("\tlibgone.so.1 => not found\n")


def test_rootfs_runs_stress_ng_in_a_chroot(workload_image: WorkloadImage) -> None:
    require_root()
    rootfs = str(workload_image.rootfs_dir)
    run = subprocess.run(
        ["chroot", rootfs, str(STRESS_NG), "--cpu", "1", "--timeout", "1s", "--metrics-brief"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "successful run completed" in run.stdout + run.stderr
    shell = subprocess.run(
        ["chroot", rootfs, "/bin/sh", "-c", 'echo "$0 ok"', "bench"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shell.returncode == 0 and shell.stdout == "bench ok\n", shell.stderr


def test_remove_image_cache(tmp_path: Path) -> None:
    build_image(cache_dir=tmp_path)
    assert len(cached_images(tmp_path)) == 1
    assert remove_image_cache(tmp_path) == 1
    assert cached_images(tmp_path) == []
    assert remove_image_cache(tmp_path) == 0
    assert os.listdir(tmp_path / "images") == []
