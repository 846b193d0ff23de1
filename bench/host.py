"""Facts about the host that go into every manifest and into `bench doctor`."""

from __future__ import annotations

import os
import platform
import pwd
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cgroups.locate import host_cgroup_version
from bench.errors import InputError


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    kernel: str
    cpu_model: str
    cpus: int
    memory_bytes: int
    cgroup_version: str
    load_1m: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def host_facts() -> HostFacts:
    return HostFacts(
        hostname=socket.gethostname(),
        kernel=platform.release(),
        cpu_model=cpu_model(),
        cpus=os.cpu_count() or 1,
        memory_bytes=memory_bytes(),
        cgroup_version=host_cgroup_version(),
        load_1m=os.getloadavg()[0],
    )


def git_commit() -> str | None:
    """The commit of bench's own checkout, when it runs from one."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def resolve_user(user: int | str | None) -> tuple[int, int] | None:
    """The scenario's `user` as (uid, gid) on this host; a bare uid keeps gid = uid."""
    if user is None:
        return None
    try:
        entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    except KeyError:
        if isinstance(user, int):
            return user, user
        raise InputError(
            f"scenario user {user!r} does not exist on this host; create it, or give a uid"
        ) from None
    return entry.pw_uid, entry.pw_gid
