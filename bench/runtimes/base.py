"""The one protocol every runtime implements, and the capabilities each one declares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bench.cgroups.model import CgroupLocation, CgroupSnapshot
    from bench.image import WorkloadImage
    from bench.spec import NetworkMode, StartSpec


ALL_CGROUP_VERSIONS = frozenset({"v1", "hybrid", "v2"})


@dataclass(frozen=True)
class Capabilities:
    """What a runtime needs and offers; planning and reports ask these, never its name."""

    # Whether the workload image must be built and prepare()d before its first trial.
    needs_image: bool
    # Whether a scenario's `oci_runtimes` multiply this runtime's trials (runc, crun).
    oci_runtime_axis: bool
    network_modes: frozenset[NetworkMode]
    # Whether it runs daemons, shims or monitors of its own whose memory is measured
    # (footprint_pids); without them the footprint table leaves it out.
    own_processes: bool
    # Host cgroup versions (bench.cgroups.locate.host_cgroup_version) on which the runtime
    # applies a scenario's [limits]; elsewhere such a scenario skips it, and refuses it when
    # asked for by name (bench.preflight).
    limits_on: frozenset[str] = ALL_CGROUP_VERSIONS
    # Where limits_on leaves the host out: what the runtime still measures, and where.
    without_limits: str = ""
    # Whether a cpuset is applied there all the same, as the CPU affinity of the container's
    # processes (a placement, not a cgroup limit): what pins a service's server apart from
    # its client.
    cpuset_by_affinity: bool = False

    def limits_refusal(self, name: str, cgroup_version: str, limit_keys: Iterable[str]) -> str:
        """Why `name` cannot apply limits with `limit_keys` set on a host of `cgroup_version`;
        "" when it can (or none are set)."""
        refused = [key for key in limit_keys if not (key == "cpuset" and self.cpuset_by_affinity)]
        if not refused or cgroup_version in self.limits_on:
            return ""
        where = f" (it can on {', '.join(sorted(self.limits_on))})" if self.limits_on else ""
        why = f"; {self.without_limits}" if self.without_limits else ""
        return f"{name} cannot apply limits on cgroup {cgroup_version}{where}{why}"


@dataclass(frozen=True)
class Availability:
    """Whether a runtime can run here; when not, why and how to fix it."""

    ok: bool
    reason: str = ""
    fix: str = ""


@dataclass(frozen=True)
class ExitInfo:
    """How the workload ended. `exit_code` is 128+N when killed by signal N."""

    exit_code: int
    # From the waiting parent's rusage, where one exists (bare metal): the cross-check
    # of the cgroup's CPU time that BenchExec also does.
    rusage_user_s: float | None = None
    rusage_sys_s: float | None = None

    @property
    def signal(self) -> int | None:
        return self.exit_code - 128 if self.exit_code > 128 else None


class Handle(Protocol):
    """A started workload: its init pid on the host and the cgroup it runs in."""

    name: str
    pid: int
    cgroup: CgroupLocation
    start_latency_s: float
    # Seconds until a system container's init was up (within start_latency_s); None for
    # runtimes that boot no init of their own.
    boot_s: float | None

    def wait(self, timeout_s: float) -> ExitInfo | None:
        """Block until the workload exits (None on timeout). The cgroup stays readable."""
        ...

    def totals_after_exit(self) -> CgroupSnapshot | None:
        """The cgroup's last totals once it is gone (a sandbox killed whole by an OOM, whose
        engine removed its cgroup before the final read); None when nothing was kept."""
        ...

    def endpoint(self, port: int) -> tuple[str, int]:
        """(address, port) at which a client on the host reaches the workload's `port`.

        One of StartSpec.ports. host: 127.0.0.1 and the port itself; bridge: the
        container's address on the run's network, which other containers of the run on
        that network reach too (the way tiers of one trial talk to each other); published:
        127.0.0.1 and the host port published for it. BenchError in mode none.
        """
        ...

    def helper_pids(self) -> list[int]:
        """The runtime's processes outside the workload's cgroup that carry its traffic.

        docker-proxy of a published port, podman's conmon: their CPU during a load is part
        of the runtime's cost, and the workload's cgroup does not see it. [] when none.
        """
        ...

    def stop(self) -> float:
        """Kill everything, remove the container or cgroup; return the seconds it took.

        Idempotent: safe to call after a failure or twice.
        """
        ...


class Runtime(Protocol):
    """A way to run a workload: one implementation per runtime."""

    name: str

    def available(self) -> Availability: ...

    def version(self) -> str: ...

    def default_oci_runtime(self) -> str | None:
        """The OCI runtime used when a scenario names none; None without an OCI axis."""
        ...

    def prepare(self, image: WorkloadImage) -> None:
        """Import the workload image (no-op for bare metal)."""
        ...

    def start(self, spec: StartSpec) -> Handle: ...

    def footprint_pids(self) -> list[int]:
        """Pids of the runtime's own processes (daemons, shims, monitors)."""
        ...

    def leftovers(self) -> list[str]:
        """Names of objects bench created that still exist (for `bench gc`)."""
        ...

    def remove_leftovers(self) -> int:
        """Remove every object bench created; return how many."""
        ...

    def close(self) -> None:
        """Release clients and stop any service bench started for the run."""
        ...


class OciAxisRuntime(Runtime, Protocol):
    """An engine whose registry entry has oci_runtime_axis: it runs several OCI runtimes."""

    def oci_runtime_available(self, oci_runtime: str) -> Availability:
        """Whether this engine can run containers with `oci_runtime` here; the fix if not."""
        ...

    def oci_runtime_version(self, oci_runtime: str) -> str:
        """`oci_runtime`'s version and the options that matter (runsc: its platform)."""
        ...
