"""What a run records: one row per trial (TrialResult) and its manifest.json (Manifest).

bench.store writes them into a run's folder and reads them back.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bench.errors import InputError
from bench.host import HostFacts

if TYPE_CHECKING:
    import pydantic


RunStatus = Literal["running", "complete", "incomplete", "failed"]
TrialStatus = Literal["ok", "failed", "oom", "timeout", "skipped"]
Role = Literal["solo", "victim", "aggressor"]

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
MANIFEST = "manifest.json"
TRIALS = "trials.parquet"
SAMPLES = "samples.parquet"
SAMPLE_PARTS = "samples.parts"


@dataclass
class TrialResult:
    """One row of trials.parquet; units are in the names."""

    trial_id: str
    runtime: str
    oci_runtime: str
    workload: str
    role: Role
    group_id: str
    repetition: int
    warmup: bool
    status: TrialStatus
    exit_code: int | None = None
    wall_s: float | None = None
    cpu_s: float | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    cpu_rusage_s: float | None = None
    mem_peak_bytes: int | None = None
    mem_peak_from_samples: bool = False
    oom_kills: int | None = None
    pids_peak: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_ns: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    throughput: float | None = None
    throughput_unit: str = ""
    start_s: float | None = None
    # System containers (lxc-system): from the launch until the init was up, within start_s.
    boot_s: float | None = None
    stop_s: float | None = None
    runtime_rss_bytes: int | None = None
    runtime_pss_bytes: int | None = None
    runtime_pss_idle_bytes: int | None = None
    group_size: int = 1
    host_probe_ms: float | None = None
    samples: int = 0
    cpu_limit_cpus: float | None = None
    mem_limit_bytes: int | None = None
    pids_limit: int | None = None
    cgroup: str = ""
    scenario_isolation_kind: str = ""
    placement: str = ""
    # The network path of the trial (bench.spec.NetworkMode); "none" without a network axis.
    network: str = "none"
    error: str = ""
    output_tail: str = ""
    # Service trials: what the client on the host measured.
    offered_rate_per_s: float | None = None
    requests: int | None = None
    request_errors: int | None = None
    requests_per_s: float | None = None
    bytes_per_s: float | None = None
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    latency_p999_s: float | None = None
    # HdrHistogram's compressed encoding (bench.latency): repetitions merge exactly.
    latency_hist: str = ""
    load_s: float | None = None
    ready_s: float | None = None
    client_cpu_s: float | None = None
    client_cpus: str = ""
    client_saturated: bool = False
    # The runtime's network helpers outside the server's cgroup (docker-proxy, conmon).
    helper_cpu_s: float | None = None
    # Multi-tier services (bench.stacks): the tier this row measures ("" for a single
    # server), and every service row's own cgroup CPU during the load (not its start).
    tier: str = ""
    load_cpu_s: float | None = None
    warnings: str = ""


@dataclass(frozen=True)
class ScenarioRef:
    """The scenario file a run came from; resuming needs the same sha256."""

    name: str
    path: str
    sha256: str
    # --quick: the CI-sized plan (fewer repetitions, shorter loads); not comparable with a
    # full run of the same file, so history and resume keep the two apart.
    quick: bool = False


@dataclass(frozen=True)
class RuntimeEntry:
    """A runtime's version when it ran, or why it was skipped or given up."""

    available: bool
    version: str = ""
    reason: str = ""
    # Each OCI runtime of the scenario's axis under this engine: its version and the
    # options measured (runsc: the platform), or why its trials were skipped.
    oci_runtimes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageEntry:
    """The workload image (digest and tag; empty for bare metal only) and binary hashes."""

    digest: str = ""
    tag: str = ""
    binaries: dict[str, str] = field(default_factory=dict)


@dataclass
class Manifest:
    """manifest.json: what ran, where, with which versions, and how it ended."""

    run_id: str
    status: RunStatus
    scenario: ScenarioRef
    started_at: str
    ended_at: str | None = None
    host: HostFacts | None = None
    runtimes: dict[str, RuntimeEntry] = field(default_factory=dict)
    image: ImageEntry = field(default_factory=ImageEntry)
    bench_version: str = ""
    git_commit: str | None = None
    host_load_before: float | None = None
    sample_interval_ms: float | None = None
    sample_detail_interval_ms: float | None = None
    trials_planned: int = 0
    trials_done: int = 0
    missed_sample_ticks: int = 0
    # Workloads bench could not remove (their runtime had stopped answering): `bench gc`.
    leftovers: list[str] = field(default_factory=list)
    # Why a run ended `failed`: what kept every measured trial from running.
    failure: str = ""

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a manifest.json back, checked field by field (InputError naming the field)."""
        import pydantic

        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"{path.parent} is not a bench result directory: {path.name} is missing. "
                "Pass a results/<run-id>/ directory written by `bench run`."
            ) from None
        except OSError as exc:
            raise InputError(f"{path} cannot be read: {exc.strerror}") from None
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise InputError(
                f"{path} is not valid JSON ({exc}); it was not written by bench or is damaged."
            ) from None
        try:
            return _manifest_adapter().validate_python(parsed)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            field_part = f", field {where!r}" if where else ""
            raise InputError(
                f"{path}{field_part}: {error['msg']}; it was not written by a compatible "
                "bench version, or was changed afterwards."
            ) from None


def check_run_id(run_id: str) -> str:
    """Run ids become directory names: letters, digits, '-', '_', '.' only."""
    if not RUN_ID_RE.match(run_id) or run_id in {".", ".."}:
        raise InputError(
            f"run id {run_id!r} is not allowed: use letters, digits, '-', '_' and '.' "
            "(at most 101 characters, not starting with a punctuation mark)"
        )
    return run_id


@functools.cache
def _manifest_adapter() -> pydantic.TypeAdapter[Manifest]:
    import pydantic

    return pydantic.TypeAdapter(Manifest)
