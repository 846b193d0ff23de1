"""Rootless podman's user: its account and subordinate ids, and its podman CLI run as it.

The user (`bench-rootless`, with subordinate ids) comes from scripts/setup-rootless.sh;
its podman keeps its own storage under the user's home.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes._podman_service import default_oci_runtime

USER_NAME = "bench-rootless"
SETUP_FIX = "run `bash scripts/setup-rootless.sh` as root (creates the user, its subordinate ids)"
# Its XDG_RUNTIME_DIR: without logind nothing makes /run/user/<uid>, so bench does (0700).
RUNTIME_DIR = Path("/run/bench-rootless")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Native overlay (kernel 5.13+ allows it in a user namespace); vfs would copy the 130 MB
# image into every container.
STORAGE_DRIVER = "overlay"
CLI_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Account:
    """The unprivileged user's ids and home."""

    uid: int
    gid: int
    home: Path


def account() -> Account | None:
    try:
        entry = pwd.getpwnam(USER_NAME)
    except KeyError:
        return None
    return Account(entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def has_subids(path: Path) -> bool:
    """Whether /etc/subuid or /etc/subgid (`path`) gives the user subordinate ids."""
    with contextlib.suppress(OSError):
        return any(line.startswith(f"{USER_NAME}:") for line in path.read_text().splitlines())
    return False


def host_ids(user: Account, inside: tuple[int, int] | None) -> tuple[int, int]:
    """The host uid and gid that the container's `inside` ids are: root inside is the user,
    id n >= 1 is the n-th of its subordinate ids (podman's rootless mapping)."""
    if inside is None:
        return user.uid, user.gid
    uid, gid = inside
    return (
        user.uid if uid == 0 else _subordinate(Path("/etc/subuid"), uid),
        user.gid if gid == 0 else _subordinate(Path("/etc/subgid"), gid),
    )


def _subordinate(path: Path, inside: int) -> int:
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        if name == USER_NAME and inside <= int(count):
            return int(start) + inside - 1
    raise BenchError(
        f"id {inside} has no subordinate id of {USER_NAME} in {path}; fix: {SETUP_FIX}"
    )


def _oci_runtime() -> str:
    """runc on hybrid hosts (crun refuses them), else podman's default: as rootful podman."""
    return default_oci_runtime()


def podman_argv(*args: str) -> list[str]:
    """The user's podman with the global options bench always gives it."""
    return [
        "podman",
        "--cgroup-manager", "cgroupfs",  # no systemd user session to ask for scopes
        "--events-backend", "file",  # nor a journal
        "--storage-driver", STORAGE_DRIVER,
        "--runtime", _oci_runtime(),
        *args,
    ]  # fmt: skip


def user_env(user: Account) -> dict[str, str]:
    """The whole environment of the user's podman: nothing of root's leaks in."""
    return {
        "HOME": str(user.home),
        "USER": USER_NAME,
        "LOGNAME": USER_NAME,
        "PATH": PATH,
        "XDG_RUNTIME_DIR": str(RUNTIME_DIR),
        "LANG": "C.UTF-8",
    }


def need_account() -> Account:
    """The user, with its runtime directory; RuntimeUnavailable when it does not exist."""
    user = account()
    if user is None:
        raise RuntimeUnavailable(f"user {USER_NAME} does not exist; fix: {SETUP_FIX}")
    RUNTIME_DIR.mkdir(mode=0o700, exist_ok=True)
    os.chown(RUNTIME_DIR, user.uid, user.gid)
    return user


def run_as(
    user: Account,
    argv: list[str],
    stdin: int | None = None,
    first_as_root: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as the user (no supplementary groups), in its environment and home.

    `first_as_root` runs in the child before it drops to the user (joining a cgroup: Popen's
    user= would drop first, and the join would be refused).
    """

    def in_child() -> None:
        if first_as_root is not None:
            first_as_root()
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)

    by_popen = first_as_root is None  # setresuid without a Python function in the child
    return subprocess.run(
        argv,
        user=user.uid if by_popen else None,
        group=user.gid if by_popen else None,
        extra_groups=[] if by_popen else None,
        preexec_fn=None if by_popen else in_child,
        env=user_env(user),
        cwd=user.home,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=CLI_TIMEOUT_S,
    )


def as_user(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the user's podman with `args`."""
    return run_as(need_account(), podman_argv(*args), stdin)


def checked(*args: str) -> str:
    """The user's podman's output for `args`; BenchError when it fails."""
    proc = as_user(*args)
    if proc.returncode != 0:
        raise BenchError(f"`podman {' '.join(args)}` as {USER_NAME} failed: {tail(proc)}")
    return proc.stdout


def tail(proc: subprocess.CompletedProcess[str]) -> str:
    """The end of podman's stderr, without its warning about a mount bench does not share."""
    lines = [line for line in proc.stderr.splitlines() if "is not a shared mount" not in line]
    return "\n".join(lines).strip()[-800:] or f"exit status {proc.returncode}"


def ensure_pause_process() -> None:
    """Start the user's pause process outside any trial's cgroup.

    Rootless podman keeps its user namespace alive in a pause process that the first
    podman command starts; started from a trial's cgroup it would stay there, counted in
    the trial and killed at its stop.
    """
    pid_file = RUNTIME_DIR / "libpod" / "tmp" / "pause.pid"
    with contextlib.suppress(OSError, ValueError):
        if Path(f"/proc/{int(pid_file.read_text())}").exists():
            return
    checked("unshare", "/bin/true")
