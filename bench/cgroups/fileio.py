"""Kept-open cgroup files read with pread, and cheap parsers that find only the needed keys.

Speed matters: the sampler reads every cgroup many times a second, and splitting a whole
memory.stat costs more than the kernel takes to produce it (docs/host-notes.md, "Reading
cgroup files: what it costs").
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.cgroups.model import CgroupGone, CgroupLocation, CgroupSnapshot, CoreSnapshot
from bench.errors import CgroupError

# errnos meaning "this cgroup no longer exists": kernfs answers ENODEV on a descriptor
# whose cgroup was rmdir'ed, and ENOENT when opening a file of a removed directory.
GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENOENT})

T = TypeVar("T")

# The OOM-kill count in v1's memory.oom_control and v2's memory.events.
_OOM_KEYS = (b"\noom_kill ",)


def open_file(directory: Path | None, name: str, *, required: bool) -> int | None:
    """Open `directory/name` read-only; None when an optional file or its controller is absent.

    A file that exists but cannot be read (e.g. *.pressure with cgroup.pressure=0 gives
    EOPNOTSUPP) counts as absent too.
    """
    if directory is None:
        if required:
            raise CgroupError(f"no directory for {name}: is its controller mounted/enabled?")
        return None
    path = directory / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        if not directory.is_dir():
            raise CgroupGone(f"cgroup {directory} does not exist (any more)") from exc
        if required:
            raise CgroupError(
                f"{path} is missing: enable the controller that provides {name} for this "
                "cgroup (v2: add it to the parent's cgroup.subtree_control; v1: mount it)"
            ) from exc
        return None
    except OSError as exc:
        raise CgroupError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        os.pread(fd, 64, 0)
    except OSError as exc:
        os.close(fd)
        if exc.errno in GONE_ERRNOS:
            raise CgroupGone(f"cgroup {directory} was removed") from exc
        if required:
            raise CgroupError(f"cannot read {path}: {exc.strerror}") from exc
        return None
    return fd


def pread_all(fd: int, size: int) -> bytes:
    """The whole file from offset 0; `size` is a guess, grown when the file is larger."""
    data = os.pread(fd, size, 0)
    while len(data) == size:  # cgroup files are seq_files: a re-read from 0 is consistent
        size *= 4
        data = os.pread(fd, size, 0)
    return data


def key_ints(data: bytes, keys: tuple[bytes, ...]) -> list[int]:
    """The integer after each key (b"\\nname "), 0 for a key that is absent.

    Keys given in file order are found by one forward scan; out-of-order keys still work.
    """
    data = b"\n%s\n" % data  # every line, the first and the last included, has both ends
    values = []
    pos = 0
    for key in keys:
        i = data.find(key, pos)
        if i < 0:
            i = data.find(key)
            if i < 0:
                values.append(0)
                continue
        start = i + len(key)
        pos = data.find(b"\n", start)
        values.append(int(data[start:pos]))
    return values


def sum_tokens(data: bytes, key: bytes) -> int:
    """Sum of every integer following `key` (e.g. b"rbytes=" or b" Read ") in the file."""
    total = 0
    i = data.find(key)
    while i >= 0:
        start = i + len(key)
        end = start
        n = len(data)
        while end < n and 48 <= data[end] <= 57:  # ASCII digits
            end += 1
        total += int(data[start:end])
        i = data.find(key, end)
    return total


def psi_total(data: bytes, line: bytes) -> int | None:
    """The total= microseconds of the `line` (b"some" or b"full") of a *.pressure file."""
    i = data.find(line)
    if i < 0:
        return None
    i = data.find(b"total=", i)
    end = data.find(b"\n", i)
    return int(data[i + 6 : end] if end >= 0 else data[i + 6 :])


class FdReader:
    """What both readers share: kept-open descriptors, error mapping on read, close."""

    version = ""
    # The token before each device's bytes read and written in the IO file (_io).
    io_read_key = b""
    io_write_key = b""
    # Opened by _open_files: memory usage (required), the files both versions read alike
    # (None when the kernel or the controller lacks one).
    _mem_current: int
    _pids_current: int | None
    _pids_peak: int | None
    _oom_events: int | None
    _io: int | None

    def __init__(self, location: CgroupLocation) -> None:
        if location.version != self.version:
            raise CgroupError(
                f"{type(self).__name__} needs a {self.version} location, got {location.version}"
            )
        self.location = location
        self._fds: list[int] = []
        try:
            self._open_files()
        except BaseException:
            self.close()
            raise

    def _open_files(self) -> None:
        """Open this version's files with _open / _open_required."""
        raise NotImplementedError

    def _open(self, directory: Path | None, name: str) -> int | None:
        fd = open_file(directory, name, required=False)
        if fd is not None:
            self._fds.append(fd)
        return fd

    def _open_required(self, directory: Path | None, name: str) -> int:
        fd = open_file(directory, name, required=True)
        assert fd is not None  # open_file raises instead for a required file
        self._fds.append(fd)
        return fd

    def read(self) -> CgroupSnapshot:
        """Every metric now; CgroupGone once the cgroup was removed."""
        return self._guarded(self._read)

    def read_core(self) -> CoreSnapshot:
        """CPU usage, current memory and pids only; CgroupGone as read()."""
        return self._guarded(self._read_core)

    def _guarded(self, read: Callable[[], T]) -> T:
        if not self._fds:
            raise CgroupError(f"reader of {self.location.display} is closed")
        try:
            return read()
        except OSError as exc:
            if exc.errno in GONE_ERRNOS:
                raise CgroupGone(f"cgroup {self.location.display} was removed") from exc
            raise CgroupError(f"cannot read {self.location.display}: {exc.strerror}") from exc

    def _read(self) -> CgroupSnapshot:
        raise NotImplementedError

    def _cpu_usage_ns(self) -> int:
        raise NotImplementedError

    def _read_core(self) -> CoreSnapshot:
        fd = self._pids_current
        return CoreSnapshot(
            self._cpu_usage_ns(),
            int(os.pread(self._mem_current, 32, 0)),
            0 if fd is None else int(os.pread(fd, 32, 0)),
        )

    def _shared_counts(
        self, current: int, inactive_file: int
    ) -> tuple[int, int, int | None, int, int, int]:
        """CgroupSnapshot's fields from the working set to the IO bytes, which both versions
        read alike: working set, pids, pids peak, OOM kills, bytes read and written."""
        pread = os.pread
        fd = self._pids_current
        fd2 = self._pids_peak
        fd3 = self._oom_events
        fd4 = self._io
        io = b"" if fd4 is None else pread_all(fd4, 4096)
        return (
            current - inactive_file if current > inactive_file else 0,
            0 if fd is None else int(pread(fd, 32, 0)),
            None if fd2 is None else int(pread(fd2, 32, 0)),
            0 if fd3 is None else key_ints(pread(fd3, 256, 0), _OOM_KEYS)[0],
            sum_tokens(io, self.io_read_key) if io else 0,
            sum_tokens(io, self.io_write_key) if io else 0,
        )

    def close(self) -> None:
        """Close every descriptor; the reader cannot be used afterwards."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
