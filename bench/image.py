"""Build the one workload image: host binaries + their libraries + static busybox.

The same bytes run under every runtime: a rootfs directory (used by LXC directly) and a
deterministic tarball of it (imported by docker and podman), cached by content.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bench.errors import BenchError, InputError

IMAGE_REPOSITORY = "bench-workload"
STRESS_NG = Path("/usr/bin/stress-ng")
BUSYBOX = Path("/bin/busybox")
# run, root, var: systemd-nspawn mounts over them (a tmpfs on /run) and would otherwise create
# them in the shared rootfs directory, or fail to in a read-only tree.
MOUNT_POINTS = ("tmp", "proc", "sys", "dev", "run", "root", "var", "bench")
CACHE_SUBDIR = "images"
CACHE_ENTRY_PREFIX = "bench-image-"
# Bump when the layout below changes, so old cache entries are not reused.
_LAYOUT_VERSION = "4"
# Files bench writes itself, never copied from the host (no host accounts leak into results),
# so the image stays the same bytes on every host. Account files for servers that look names
# up: nginx started as root drops its workers to nobody:nogroup by name.
WRITTEN_FILES: dict[str, bytes] = {
    "etc/passwd": (
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
    ),
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    # busybox init's table for LXC system containers (bench/runtimes/lxc_system.py):
    # one sysinit entry saying the init is up, and nothing to respawn, so PID 1 only reaps.
    # Without a table busybox init would start shells on consoles the container lacks.
    "etc/inittab": b"::sysinit:/bin/busybox sh -c 'echo B > /bench/boot'\n",
}
_CHUNK_BYTES = 1 << 20
# ldd(1) output: "libm.so.6 => /lib/.../libm.so.6 (0x...)" or "/lib64/ld-linux... (0x...)".
_LDD_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(.*?)\s*(\(0x[0-9a-f]+\))?$")
_LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)$")


@dataclass(frozen=True)
class WorkloadImage:
    """The built image. `digest` is the sha256 (hex) of the tarball's bytes.

    `binaries` maps every host file copied into the image (executables and the
    libraries they load) to its sha256, for the result manifest.
    """

    tag: str
    digest: str
    tarball: Path
    rootfs_dir: Path
    binaries: dict[str, str]

    @property
    def repository(self) -> str:
        return self.tag.partition(":")[0]

    @property
    def version_tag(self) -> str:
        """The part after ':' (the first 12 hex digits of the digest)."""
        return self.tag.partition(":")[2]


@dataclass(frozen=True)
class _Entry:
    """One tar member; `source` is the host file for regular files."""

    path: str  # relative, POSIX, no leading "/"
    kind: str  # "dir" | "file" | "symlink"
    mode: int
    source: Path | None = None
    link: str = ""
    content: bytes | None = None  # a file bench writes itself (WRITTEN_FILES)


def default_cache_dir() -> Path:
    """/var/cache/bench when writable (root), else ~/.cache/bench."""
    system = Path("/var/cache/bench")
    try:
        system.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    else:
        if os.access(system, os.W_OK):
            return system
    return Path.home() / ".cache" / "bench"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def parse_ldd(text: str) -> list[Path]:
    """Absolute library paths (including the dynamic loader) listed in ldd(1) output."""
    libraries: list[Path] = []
    for line in text.splitlines():
        if match := _LDD_ARROW.match(line):
            name, target = match.group(1), match.group(2)
            if target == "not found":
                raise BenchError(f"library {name} is not found on this host (ldd)")
            if target.startswith("/"):
                libraries.append(Path(target))
        elif match := _LDD_PLAIN.match(line):
            libraries.append(Path(match.group(1)))
        # Anything else: linux-vdso (kernel-provided) or "statically linked".
    return libraries


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries `binary` loads, via ldd(1); empty for a static binary."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # glibc's ldd exits 1 with "not a dynamic executable" for static binaries.
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise BenchError(f"ldd {binary} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_ldd(proc.stdout)


def _relative(path: Path) -> str:
    return str(PurePosixPath(path).relative_to("/"))


def _data_files(path: Path) -> list[Path]:
    """`path` if a file, else every regular file under it (symlinks followed), sorted;
    never Python bytecode caches (their content depends on what ran on the host before)."""
    if not path.is_dir():
        return [path]
    return sorted(
        p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.relative_to(path).parts
    )


def _entries(binaries: Sequence[Path], data_paths: Sequence[Path] = ()) -> list[_Entry]:
    """Every member of the image, sorted by path: files, their parent dirs, mount points."""
    files: dict[str, Path] = {}
    for binary in binaries:
        for host_path in (binary, *shared_libraries(binary)):
            files.setdefault(_relative(host_path), host_path)
    for data_path in data_paths:
        for host_path in _data_files(data_path):
            files.setdefault(_relative(host_path), host_path)
    entries: dict[str, _Entry] = {}
    for rel, host_path in files.items():
        mode = host_path.stat().st_mode & 0o755  # follows symlinks: the content is copied
        entries[rel] = _Entry(rel, "file", mode, source=host_path)
    for rel, content in WRITTEN_FILES.items():
        entries.setdefault(rel, _Entry(rel, "file", 0o644, content=content))
    for point in MOUNT_POINTS:
        entries.setdefault(point, _Entry(point, "dir", 0o1777 if point == "tmp" else 0o755))
    busybox_rel = _relative(BUSYBOX)
    sh_rel = str(PurePosixPath(busybox_rel).parent / "sh")
    if sh_rel not in entries:
        entries[sh_rel] = _Entry(sh_rel, "symlink", 0o777, link=PurePosixPath(busybox_rel).name)
    for rel in list(entries):
        for parent in PurePosixPath(rel).parents:
            if str(parent) != ".":
                entries.setdefault(str(parent), _Entry(str(parent), "dir", 0o755))
    return [entries[key] for key in sorted(entries)]


def _content_key(entries: Iterable[_Entry]) -> tuple[str, dict[str, str]]:
    """A key over every member's path, kind, mode and content; plus the file hashes."""
    key = hashlib.sha256(f"layout {_LAYOUT_VERSION}\n".encode())
    hashes: dict[str, str] = {}
    for entry in entries:
        content = ""
        if entry.source is not None:
            content = file_sha256(entry.source)
            hashes[str(entry.source)] = content
        elif entry.content is not None:
            content = hashlib.sha256(entry.content).hexdigest()
        key.update(
            f"{entry.path}\0{entry.kind}\0{entry.mode:o}\0{entry.link}\0{content}\n".encode()
        )
    return key.hexdigest(), hashes


def _write_rootfs(entries: Sequence[_Entry], rootfs: Path) -> None:
    for entry in entries:
        target = rootfs / entry.path
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif entry.kind == "symlink":
            target.symlink_to(entry.link)
        elif entry.content is not None:
            target.write_bytes(entry.content)
        else:
            assert entry.source is not None
            shutil.copyfile(entry.source, target)
        if entry.kind != "symlink":
            target.chmod(entry.mode)


def _write_tarball(entries: Sequence[_Entry], rootfs: Path, tarball: Path) -> None:
    """A reproducible tar: sorted members, mtime 0, owner root, no pax timestamps."""
    with tarfile.open(tarball, "w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = entry.mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                tar.addfile(info)
            else:
                copied = rootfs / entry.path
                info.size = copied.stat().st_size
                with copied.open("rb") as handle:
                    tar.addfile(info, handle)


def _load_cached(entry_dir: Path) -> WorkloadImage | None:
    meta_path = entry_dir / "image.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    tarball = entry_dir / "image.tar"
    if not tarball.is_file() or file_sha256(tarball) != meta.get("digest"):
        return None
    return WorkloadImage(
        tag=meta["tag"],
        digest=meta["digest"],
        tarball=tarball,
        rootfs_dir=entry_dir / "rootfs",
        binaries=dict(meta["binaries"]),
    )


def build_image(
    extra_binaries: Sequence[Path] = (),
    cache_dir: Path | None = None,
    data_paths: Sequence[Path] = (),
    packages: Mapping[Path, str] | None = None,
) -> WorkloadImage:
    """Build (or reuse from the cache) the image holding stress-ng, busybox and extras.

    Every binary keeps its host path inside the image, so workload argv such as
    /usr/bin/stress-ng is valid in every runtime and on bare metal. `data_paths` (files or
    directories a server reads, e.g. PostgreSQL's share dir) are copied as they are;
    `packages` names the Debian package that provides a path, for the error when missing.
    """
    binaries = [STRESS_NG, BUSYBOX, *extra_binaries]
    known = {STRESS_NG: "stress-ng", BUSYBOX: "busybox-static", **(packages or {})}
    for path in (*binaries, *data_paths):
        if not path.is_absolute():
            raise InputError(f"image file {path} must be an absolute path")
        if not (path.is_file() or (path in data_paths and path.is_dir())):
            package = known.get(path)
            fix = f"install it: apt-get install {package}" if package else "check the path"
            raise InputError(f"{path} is needed in the workload image but missing; {fix}")
    entries = _entries(binaries, data_paths)
    key, hashes = _content_key(entries)
    root = (cache_dir or default_cache_dir()) / CACHE_SUBDIR
    entry_dir = root / f"{CACHE_ENTRY_PREFIX}{key[:16]}"
    cached = _load_cached(entry_dir)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{CACHE_ENTRY_PREFIX}tmp-", dir=root))
    try:
        rootfs = staging / "rootfs"
        rootfs.mkdir()
        _write_rootfs(entries, rootfs)
        tarball = staging / "image.tar"
        _write_tarball(entries, rootfs, tarball)
        digest = file_sha256(tarball)
        meta = {"tag": f"{IMAGE_REPOSITORY}:{digest[:12]}", "digest": digest, "binaries": hashes}
        (staging / "image.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        staging.chmod(0o755)
        if entry_dir.exists():  # a broken or stale entry with the same key
            shutil.rmtree(entry_dir)
        try:
            staging.rename(entry_dir)
        except OSError:
            # Another process finished the same build first: use theirs.
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    image = _load_cached(entry_dir)
    if image is None:
        raise BenchError(f"the image cache entry {entry_dir} is unreadable; remove it")
    return image


def cached_images(cache_dir: Path | None = None) -> list[Path]:
    """Image cache entries (and leftover staging dirs) under the cache root."""
    root = (cache_dir or default_cache_dir()) / CACHE_SUBDIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(CACHE_ENTRY_PREFIX))


def remove_image_cache(cache_dir: Path | None = None) -> int:
    """Delete every cached image (for `bench gc`); return how many entries were removed."""
    removed = 0
    for entry_dir in cached_images(cache_dir):
        shutil.rmtree(entry_dir)
        removed += 1
    return removed
