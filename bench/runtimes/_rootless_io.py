"""Rootless podman's io dirs: a trial's io dir as a copy the user can bind into its container.

Results may lie below a directory the user cannot enter (0700, such as /root), so each
container binds a directory of the user's (`~/io/<name>`), which bench binds over the
trial's io dir for its own reads and copies back at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from bench.errors import BenchError
from bench.runtimes._rootless_user import USER_NAME, Account, account
from bench.spec import NAME_PREFIX

IO_SUBDIR = "io"


class IoDir:
    """The trial's io dir as the user's podman can bind it.

    The container binds `staging`; bench bind-mounts it over the io dir, so its own reads
    and writes go where the container's do. remove() copies the files back into the io dir
    and deletes the user's copy. The copy belongs to `owner`: the host ids of the user the
    container runs as.
    """

    def __init__(self, owner: tuple[int, int], user: Account, io_dir: Path, name: str) -> None:
        self.io_dir = io_dir
        self.staging = user.home / IO_SUBDIR / name
        self.staging.parent.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.staging.parent, user.uid, user.gid)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        shutil.copytree(io_dir, self.staging, symlinks=True)
        for path in (self.staging, *self.staging.rglob("*")):
            os.chown(path, *owner, follow_symlinks=False)
        _mount_bind(self.staging, io_dir)
        self._mounted = True

    def remove(self) -> None:
        if self._mounted:
            _umount(self.io_dir)
            self._mounted = False
            _copy_back(self.staging, self.io_dir)
        shutil.rmtree(self.staging, ignore_errors=True)


def _mount_bind(source: Path, target: Path) -> None:
    proc = subprocess.run(
        ["mount", "--bind", str(source), str(target)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"cannot bind {source} over {target}: {proc.stderr.strip()}")


def _umount(target: Path) -> None:
    proc = subprocess.run(["umount", str(target)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # Busy (a reader still has a file open): detach it; the files stay reachable.
        subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)


def _copy_back(staging: Path, io_dir: Path) -> None:
    """Regular files and directories only: never open the control FIFO (it would block)."""
    for path in sorted(staging.rglob("*")):
        target = io_dir / path.relative_to(staging)
        if path.is_symlink():
            continue
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.is_file():
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            shutil.copy2(path, target)


def remove_stale() -> int:
    """Unbind the io copies left bound over io dirs (their files copied back) and delete
    every copy; how many were removed."""
    removed = 0
    user = account()
    for name, target in mounted_io_dirs():  # before the copies they show
        _umount(target)
        if user is not None and (user.home / IO_SUBDIR / name).is_dir():
            # What the workload wrote goes where the killed run's results are.
            _copy_back(user.home / IO_SUBDIR / name, target)
        removed += 1
    for staging in staging_dirs():
        shutil.rmtree(staging, ignore_errors=True)
        removed += 1
    return removed


def staging_dirs() -> list[Path]:
    user = account()
    root = None if user is None else user.home / IO_SUBDIR
    if root is None or not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(NAME_PREFIX))


def mounted_io_dirs(name_prefix: str = NAME_PREFIX) -> list[tuple[str, Path]]:
    """(container name, mount point) of each bind of a user's io copy over a trial's io dir,
    from /proc/self/mountinfo (the copy may be deleted already)."""
    found: list[tuple[str, Path]] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = [_unescape(field) for field in line.split()]
        root = fields[3].removesuffix("//deleted")
        parent, _, name = root.rpartition("/")
        if parent.endswith(f"/{USER_NAME}/{IO_SUBDIR}") and name.startswith(name_prefix):
            found.append((name, Path(fields[4])))
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)
