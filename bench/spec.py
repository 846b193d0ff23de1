"""Plain data shared by the runner, the runtimes and the cgroup code."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

# How a workload's network reaches the host (docs/architecture.md, "Network paths"):
# none: loopback only; host: the host's own stack; bridge: the container's address on a
# network bench creates for the run; published: a port published on 127.0.0.1.
NetworkMode = Literal["none", "host", "bridge", "published"]
NETWORK_MODES: tuple[NetworkMode, ...] = ("none", "host", "bridge", "published")

CPU_PERIOD_US = 100_000
NAME_PREFIX = "bench-"
LABEL = "bench"


def caller_rlimits() -> tuple[tuple[str, int, int], ...]:
    """bench's own nofile and nproc limits, given to every workload under every runtime.

    Fair, and safe: a host without CAP_SYS_RESOURCE cannot raise any rlimit, and
    podman's defaults (nofile 1048576) fail there (docs/host-notes.md).
    """
    limits = []
    # "unlimited" is not portable across runtimes' parsers, hence a cap for each; nproc's
    # is podman's: every podman process lowers its own RLIMIT_NPROC to 32768, so runc (its
    # grandchild) cannot give a container more (measured: "error setting rlimit type 6").
    caps = {"nofile": 1 << 20, "nproc": 32768}
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = resource.getrlimit(which)
        cap = caps[name]
        hard = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
        limits.append((name, soft, hard))
    return tuple(limits)


@dataclass(frozen=True)
class Limits:
    """Resource limits applied identically under every runtime."""

    cpus: float | None = None
    cpuset: str | None = None
    memory_bytes: int | None = None
    pids: int | None = None

    def set_keys(self) -> list[str]:
        """The names of the limits that are set."""
        return [limit.name for limit in fields(self) if getattr(self, limit.name) is not None]

    @property
    def cpu_quota_us(self) -> int | None:
        return None if self.cpus is None else round(self.cpus * CPU_PERIOD_US)


@dataclass(frozen=True)
class StartSpec:
    """Everything a runtime needs to start one workload.

    `io_dir` is a host directory that is the workload's working directory: bare runs
    `cd` into it, containers bind-mount it at /bench. Workload argv refers to files in
    it by relative path only, so the same argv is valid everywhere.
    """

    name: str
    argv: tuple[str, ...]
    io_dir: Path
    limits: Limits = field(default_factory=Limits)
    rlimits: tuple[tuple[str, int, int], ...] = field(default_factory=caller_rlimits)
    network: NetworkMode = "none"
    # TCP ports the workload listens on inside; Handle.endpoint(port) tells a host client
    # where to reach each one (published mode publishes exactly these).
    ports: tuple[int, ...] = ()
    oci_runtime: str | None = None
    labels: tuple[tuple[str, str], ...] = ((LABEL, "1"),)
    # (uid, gid) the workload runs as, with no supplementary groups; None: as bench itself.
    user: tuple[int, int] | None = None


STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
