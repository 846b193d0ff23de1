"""The file operations on cgroup directories that bench's own cgroups need: errors as
CgroupError naming the file, and waits for what the kernel does asynchronously."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from bench.errors import CgroupError

_POLL_S = 0.01


def subtree(directory: Path) -> list[Path]:
    """`directory` and every cgroup below it, deepest first; [] when it does not exist."""
    found = [Path(dirpath) for dirpath, _dirs, _files in os.walk(directory)]
    return sorted(found, key=lambda p: -len(p.parts))


def procs(directory: Path) -> list[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CgroupError(f"cannot read {directory}/cgroup.procs: {exc.strerror}") from exc


def kill_until_empty(directory: Path, timeout_s: float) -> None:
    """SIGKILL the processes of `directory` (not ours) until none is left."""
    deadline = time.monotonic() + timeout_s
    me = os.getpid()
    while pids := [p for p in procs(directory) if p != me]:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise CgroupError(f"processes {pids} in {directory} survive SIGKILL")
        time.sleep(_POLL_S)


def rmdir(directory: Path, timeout_s: float) -> None:
    """Remove an empty cgroup, waiting while the kernel still holds it (EBUSY)."""
    # The kernel releases a cgroup shortly after its last task exits (EBUSY until then).
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {directory}: {exc.strerror}") from exc
            time.sleep(_POLL_S)


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CgroupError(f"cannot read {path}: {exc.strerror}") from exc


def write(path: Path, text: str) -> None:
    # os-level write: cgroup files report errors from write(2), which buffered I/O hides
    # until close.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {text!r} to {path}: {exc.strerror}") from exc
