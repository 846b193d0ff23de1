"""Write valid synthetic result stores with known, injected effects (for analysis tests).

Written through bench's own ResultStore, Manifest and TrialResult, so a fixture has exactly
the files, columns and dtypes of a real run. Values are realistic in size; noise is
multiplicative Gaussian so the true ratio of medians between two runtimes is exactly the
injected factor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench.cgroups.model import SNAPSHOT_FIELDS
from bench.host import HostFacts
from bench.latency import LatencyHistogram
from bench.results import (
    TRIALS,
    ImageEntry,
    Manifest,
    RuntimeEntry,
    ScenarioRef,
    TrialResult,
)
from bench.sampler import MISSING, SampleColumns
from bench.store import ResultStore

MiB = 1 << 20
BASE_THROUGHPUT = {"cpu": 1200.0, "vm": 350.0, "fork": 9000.0, "io": 80.0}
# The client's numbers (bench.service.record) that a tier behind the front does not carry:
# its row has TrialResult's defaults there.
CLIENT_FIELDS = (
    "throughput", "throughput_unit", "requests", "request_errors", "requests_per_s", "bytes_per_s",
    "latency_p50_s", "latency_p90_s", "latency_p99_s", "latency_p999_s", "latency_hist",
    "client_cpu_s", "client_cpus", "client_saturated", "helper_cpu_s",
)  # fmt: skip
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialResult)}


@dataclass(frozen=True)
class IsolationCase:
    """One isolation experiment: a victim beside aggressors of one kind, per runtime."""

    kind: str = "cpu"  # "cpu" | "memory" | "fork" | "io"
    placement: str = "shared"  # "shared" | "separate"
    victim_workload: str = "cpu"
    aggressors: int = 1
    degradation: dict[str, float] = field(default_factory=dict)  # runtime -> fraction lost
    aggressor_mem_limit_bytes: int | None = 256 * MiB
    aggressor_mem_peak_bytes: int = 200 * MiB
    aggressor_oom: bool = False
    victim_status: str = "ok"


@dataclass(frozen=True)
class ServiceCase:
    """One service workload over network paths: lognormal latencies recorded into each
    trial's HdrHistogram (`raw_latencies_s` gives the very values back)."""

    workload: str = "http-get"
    paths: tuple[str, ...] = ("bare/host", "docker/host", "docker/published")
    requests: int = 4000  # per trial
    latency_median_s: float = 200e-6
    latency_sigma: float = 0.6
    latency_factor: dict[str, float] = field(default_factory=dict)  # label -> x
    saturated: tuple[str, ...] = ()  # labels whose client is saturated in every trial
    helper_cpu_s: dict[str, float] = field(default_factory=dict)  # label -> per trial
    server_cpu_s_per_request: float = 20e-6
    offered_rate_per_s: float | None = None
    # A multi-tier service: the front tier's name, and the tiers behind it in start order
    # with their CPU-seconds per request during the load (each one row of the same step).
    front_tier: str = ""
    back_tiers: dict[str, float] = field(default_factory=dict)
    tier_cpu_factor: dict[tuple[str, str], float] = field(default_factory=dict)  # (tier, label)
    tier_mem_peak_bytes: int = 20 * MiB


@dataclass(frozen=True)
class StoreSpec:
    """What to generate. Factors are relative to bare; missing runtimes get 1.0."""

    run_id: str = "bench-synthetic-0001"
    runtimes: tuple[str, ...] = ("bare", "docker", "podman", "lxc")
    workloads: tuple[str, ...] = ("cpu", "vm")
    repetitions: int = 10
    warmups: int = 1
    noise: float = 0.02
    throughput_factor: dict[str, float] = field(default_factory=dict)
    cpu_factor: dict[str, float] = field(default_factory=dict)
    mem_extra_bytes: dict[str, int] = field(default_factory=dict)
    start_s: dict[str, float] = field(
        default_factory=lambda: {"bare": 0.004, "docker": 0.45, "podman": 0.38, "lxc": 0.6}
    )
    stop_s: dict[str, float] = field(
        default_factory=lambda: {"bare": 0.002, "docker": 0.3, "podman": 0.25, "lxc": 0.4}
    )
    isolation: tuple[IsolationCase, ...] = ()
    services: tuple[ServiceCase, ...] = ()
    trial_duration_s: float = 5.0
    sample_hz: float = 10.0
    failed: int = 0  # this many extra failed trials per runtime (must be ignored)
    host_load_before: float = 0.05
    cpus: int = 2
    seed: int = 0
    omit_columns: tuple[str, ...] = ()  # simulate a store written before these columns
    # What the manifest records about where and with what the run ran (history tests vary them).
    started_at: str = "2025-01-01T00:00:00+00:00"
    scenario_name: str = "synthetic"
    scenario_sha256: str = ""  # "" = a hash of run_id: every run its own scenario
    quick: bool = False  # run with --quick
    bench_version: str = "0.1.0"
    git_commit: str = "0123456789abcdef0123456789abcdef01234567"
    kernel: str = "6.1.0-synthetic"
    hostname: str = "bench-host"
    runtime_versions: dict[str, str] = field(default_factory=dict)  # runtime -> version
    status: str = "complete"


def _samples(
    rng: np.random.Generator,
    duration_s: float,
    hz: float,
    cpu_cores: float,
    mem_peak: int,
) -> SampleColumns:
    t = np.arange(0.0, duration_s, 1.0 / hz)
    n = t.size
    # Cumulative counters: integrate a jittery rate so they are monotone like the kernel's.
    rate = np.clip(cpu_cores * (1 + 0.03 * rng.standard_normal(n)), 0, None)
    dt = np.diff(t, prepend=0.0)
    cpu_ns = np.cumsum(rate * dt * 1e9).astype(np.int64)
    ramp = np.minimum(1.0, (t + 1.0 / hz) / max(duration_s * 0.1, 1e-9))
    mem = (mem_peak * ramp * (1 - 0.01 * rng.random(n))).astype(np.int64)
    mem[-1] = mem_peak
    io = np.cumsum(rng.integers(0, 4096, n)).astype(np.int64)
    values = {
        "cpu_usage_ns": cpu_ns,
        "cpu_user_ns": cpu_ns * 9 // 10,
        "cpu_system_ns": cpu_ns // 10,
        "cpu_nr_throttled": np.zeros(n, dtype=np.int64),
        "cpu_throttled_ns": np.zeros(n, dtype=np.int64),
        "mem_current_bytes": mem,
        "mem_peak_bytes": np.maximum.accumulate(mem),
        "mem_anon_bytes": mem * 8 // 10,
        "mem_file_bytes": mem * 2 // 10,
        "mem_working_set_bytes": mem * 9 // 10,
        "pids_current": np.full(n, 2, dtype=np.int64),
        "oom_kill_count": np.zeros(n, dtype=np.int64),
        "io_read_bytes": io,
        "io_write_bytes": io // 2,
    }
    columns = SampleColumns(t0=0.0, t_s=array("d", t.tobytes()))
    for name in SNAPSHOT_FIELDS:  # metrics not simulated are missing, as on an older kernel
        column = values.get(name, np.full(n, MISSING, dtype=np.int64))
        columns.values[name] = array("q", column.astype(np.int64).tobytes())
    return columns


def _trial(
    spec: StoreSpec,
    rng: np.random.Generator,
    *,
    trial_id: str,
    runtime: str,
    workload: str,
    role: str,
    group_id: str,
    repetition: int,
    warmup: bool,
    throughput_scale: float = 1.0,
    status: str = "ok",
    mem_peak_bytes: int | None = None,
    kind: str = "",
    placement: str = "",
    oom_kills: int = 0,
    mem_limit_bytes: int | None = None,
) -> TrialResult:
    noise = 1 + spec.noise * rng.standard_normal()
    factor = spec.throughput_factor.get(runtime, 1.0)
    throughput = BASE_THROUGHPUT.get(workload, 500.0) * factor * throughput_scale * noise
    wall = spec.trial_duration_s * (1 + 0.002 * rng.standard_normal())
    cpu = wall * spec.cpu_factor.get(runtime, 1.0) * (1 + spec.noise * rng.standard_normal())
    mem = mem_peak_bytes or int(
        (64 * MiB + spec.mem_extra_bytes.get(runtime, 0)) * (1 + 0.01 * rng.standard_normal())
    )
    return TrialResult(
        trial_id=trial_id,
        runtime=runtime,
        oci_runtime="runc" if runtime in ("docker", "podman") else "",
        workload=workload,
        role=role,  # type: ignore[arg-type]
        group_id=group_id,
        repetition=repetition,
        warmup=warmup,
        status=status,  # type: ignore[arg-type]
        exit_code=0 if status == "ok" else (137 if status == "oom" else 1),
        wall_s=wall,
        cpu_s=cpu,
        cpu_user_s=cpu * 0.9,
        cpu_sys_s=cpu * 0.1,
        cpu_rusage_s=cpu if runtime == "bare" else None,
        mem_peak_bytes=mem,
        oom_kills=oom_kills,
        cpu_nr_throttled=0,
        cpu_throttled_ns=0,
        throughput=throughput if status == "ok" else None,
        throughput_unit="bogo-ops/s",
        start_s=spec.start_s.get(runtime, 0.3) * (1 + 0.05 * rng.standard_normal()),
        stop_s=spec.stop_s.get(runtime, 0.2) * (1 + 0.05 * rng.standard_normal()),
        runtime_rss_bytes=0 if runtime == "bare" else 40 * MiB,
        runtime_pss_bytes=0 if runtime == "bare" else 30 * MiB,
        cgroup=f"/sys/fs/cgroup/bench-{trial_id}",
        error="" if status == "ok" else "synthetic failure",
        scenario_isolation_kind=kind,
        placement=placement,
        mem_limit_bytes=mem_limit_bytes,
    )


def raw_latencies_s(spec: StoreSpec, case: ServiceCase, label: str, repetition: int) -> np.ndarray:
    """The latencies (s) of one service trial, the same on every call."""
    key = zlib.crc32(f"{case.workload}|{label}".encode())
    rng = np.random.default_rng([spec.seed, key, repetition])
    median = case.latency_median_s * case.latency_factor.get(label, 1.0)
    return np.asarray(median * rng.lognormal(0.0, case.latency_sigma, case.requests))


def _service_trial(
    spec: StoreSpec,
    rng: np.random.Generator,
    case: ServiceCase,
    label: str,
    *,
    trial_id: str,
    repetition: int,
    warmup: bool,
) -> TrialResult:
    runtime, network = label.split("/")
    latencies = raw_latencies_s(spec, case, label, repetition)
    histogram = LatencyHistogram.from_seconds(latencies)
    summary = histogram.summary()
    load_s = spec.trial_duration_s * (1 + spec.noise * rng.standard_normal())
    # Open loop keeps to its schedule: the achieved rate is the offered one, within the noise.
    offered = case.offered_rate_per_s
    rate = (
        case.requests / load_s
        if offered is None
        else offered * (1 + spec.noise * rng.standard_normal())
    )
    cpu = case.requests * case.server_cpu_s_per_request * (1 + spec.noise * rng.standard_normal())
    rate_tag = "" if case.offered_rate_per_s is None else f"@{case.offered_rate_per_s:g}/s"
    row = _trial(
        spec,
        rng,
        trial_id=trial_id,
        runtime=runtime,
        workload=case.workload + rate_tag,
        role="solo",
        group_id=f"g-{trial_id}",
        repetition=repetition,
        warmup=warmup,
    )
    return dataclasses.replace(
        row,
        network=network,
        wall_s=load_s + 0.2,
        cpu_s=cpu,
        throughput=rate,
        throughput_unit="req/s",
        offered_rate_per_s=case.offered_rate_per_s,
        requests=case.requests,
        request_errors=0,
        requests_per_s=rate,
        latency_p50_s=summary.p50_s,
        latency_p90_s=summary.p90_s,
        latency_p99_s=summary.p99_s,
        latency_p999_s=summary.p999_s,
        latency_hist=histogram.encode(),
        load_s=load_s,
        client_cpu_s=load_s * 0.5,
        client_saturated=label in case.saturated,
        helper_cpu_s=case.helper_cpu_s.get(label),
        tier=case.front_tier,
        load_cpu_s=cpu if case.front_tier else None,
    )


def _back_tier_trial(
    spec: StoreSpec, rng: np.random.Generator, case: ServiceCase, front: TrialResult, tier: str
) -> TrialResult:
    """A tier behind the front, in the front's step: its own CPU during the load, no client."""
    label = f"{front.runtime}/{front.network}"
    per_request_s = case.back_tiers[tier] * case.tier_cpu_factor.get((tier, label), 1.0)
    load_cpu_s = case.requests * per_request_s * (1 + spec.noise * rng.standard_normal())
    return dataclasses.replace(
        front,
        trial_id=f"{front.trial_id}-{tier}",
        cpu_s=load_cpu_s * 1.1,
        load_cpu_s=load_cpu_s,
        mem_peak_bytes=case.tier_mem_peak_bytes,
        tier=tier,
        **{name: _DEFAULTS[name] for name in CLIENT_FIELDS},
    )


def build(spec: StoreSpec) -> tuple[Manifest, list[tuple[TrialResult, SampleColumns | None]]]:
    """The manifest, and the trials with their samples, of a synthetic run."""
    rng = np.random.default_rng(spec.seed)
    rows: list[TrialResult] = []
    counter = 0

    def next_id() -> str:
        nonlocal counter
        counter += 1
        return f"t{counter:05d}"

    def solo(
        runtime: str, workload: str, repetition: int, warmup: bool, status: str = "ok"
    ) -> TrialResult:
        tid = next_id()
        return _trial(
            spec,
            rng,
            trial_id=tid,
            runtime=runtime,
            workload=workload,
            role="solo",
            group_id=f"g-{tid}",
            repetition=repetition,
            warmup=warmup,
            status=status,
        )

    total = spec.warmups + spec.repetitions
    for rep in range(total):
        warm = rep < spec.warmups
        for workload in spec.workloads:
            for runtime in spec.runtimes:  # interleaved A B C D A B C D
                rows.append(solo(runtime, workload, rep, warm))
        for service in spec.services:
            for label in service.paths:
                tid = next_id()
                front = _service_trial(
                    spec, rng, service, label, trial_id=tid, repetition=rep, warmup=warm
                )
                # A stack's tiers start in order: the ones behind the front come first.
                rows += [_back_tier_trial(spec, rng, service, front, t) for t in service.back_tiers]
                rows.append(front)
        for case in spec.isolation:
            if warm:
                continue
            for runtime in spec.runtimes:
                vid = next_id()
                group = f"g-{vid}"
                rows.append(
                    _trial(
                        spec,
                        rng,
                        trial_id=vid,
                        runtime=runtime,
                        workload=case.victim_workload,
                        role="victim",
                        group_id=group,
                        repetition=rep,
                        warmup=False,
                        throughput_scale=1 - case.degradation.get(runtime, 0.0),
                        status=case.victim_status,
                        kind=case.kind,
                        placement=case.placement,
                    )
                )
                for _ in range(case.aggressors):
                    rows.append(
                        _trial(
                            spec,
                            rng,
                            trial_id=next_id(),
                            runtime=runtime,
                            workload=f"aggr-{case.kind}",
                            role="aggressor",
                            group_id=group,
                            repetition=rep,
                            warmup=False,
                            status="oom" if case.aggressor_oom else "ok",
                            mem_peak_bytes=case.aggressor_mem_peak_bytes,
                            kind=case.kind,
                            placement=case.placement,
                            oom_kills=1 if case.aggressor_oom else 0,
                            mem_limit_bytes=case.aggressor_mem_limit_bytes,
                        )
                    )
    for runtime in spec.runtimes:
        for _ in range(spec.failed):
            rows.append(solo(runtime, spec.workloads[0], total, warmup=False, status="failed"))
    results: list[tuple[TrialResult, SampleColumns | None]] = [
        (
            row,
            _samples(
                rng,
                spec.trial_duration_s,
                spec.sample_hz,
                (row.cpu_s or 0.0) / (row.wall_s or 1.0),
                row.mem_peak_bytes or 0,
            )
            if row.status == "ok" or row.role == "aggressor"
            else None,
        )
        for row in rows
    ]
    manifest = Manifest(
        run_id=spec.run_id,
        status=spec.status,  # type: ignore[arg-type]
        scenario=ScenarioRef(
            spec.scenario_name,
            f"scenarios/{spec.scenario_name}.toml",
            spec.scenario_sha256 or hashlib.sha256(spec.run_id.encode()).hexdigest(),
            spec.quick,
        ),
        started_at=spec.started_at,
        ended_at="2025-01-01T00:30:00+00:00",
        host=HostFacts(
            hostname=spec.hostname,
            kernel=spec.kernel,
            cpu_model="Synthetic CPU @ 3.0GHz",
            cpus=spec.cpus,
            memory_bytes=8 << 30,
            cgroup_version="v2",
            load_1m=spec.host_load_before,
        ),
        runtimes={
            r: RuntimeEntry(
                available=True,
                version=spec.runtime_versions.get(r, "" if r == "bare" else f"{r} 1.0"),
            )
            for r in dict.fromkeys(
                [*spec.runtimes, *(p.split("/")[0] for c in spec.services for p in c.paths)]
            )
        },
        image=ImageEntry(digest="sha256:" + "0" * 64, binaries={"/usr/bin/stress-ng": "ab" * 32}),
        bench_version=spec.bench_version,
        git_commit=spec.git_commit,
        host_load_before=spec.host_load_before,
        trials_planned=len(results),
        trials_done=len(results),
    )
    return manifest, results


def write_store(root: Path, spec: StoreSpec | None = None) -> Path:
    """Write results/<run-id>/ under root through ResultStore and return that directory."""
    spec = spec or StoreSpec()
    manifest, results = build(spec)
    store = ResultStore(root / spec.run_id)
    store.write_manifest(manifest)
    store.add_trials(results)
    store.finish()
    if spec.omit_columns:
        path = store.run_dir / TRIALS
        pq.write_table(pq.read_table(path).drop_columns(list(spec.omit_columns)), path)
    return store.run_dir


def write_fleet(root: Path, fleet_id: str, hosts: dict[str, StoreSpec | None]) -> Path:
    """A fleet result (bench.fleet_store) under root: each host with a spec brought that run
    back (status complete), a host with None is recorded unreachable."""
    from bench.fleet_store import FleetManifest, HostEntry, host_dir

    fleet_dir = root / fleet_id
    entries = {}
    for name, spec in hosts.items():
        if spec is None:
            entries[name] = HostEntry(status="unreachable", reason="No route to host")
            continue
        run_dir = write_store(root / f".gen-{fleet_id}", spec)
        host_dir(fleet_dir, name).parent.mkdir(parents=True, exist_ok=True)
        run_dir.rename(host_dir(fleet_dir, name))
        entries[name] = HostEntry(status="complete", run_id=spec.run_id, hostname=spec.hostname)
    FleetManifest(
        fleet_id=fleet_id, status="complete" if None not in hosts.values() else "incomplete",
        scenario_name="synthetic", scenario_sha256="ab" * 32, quick=False, runtimes=[],
        bench_version="0.1.0", bench_source_sha256="cd" * 32, git_commit=None,
        inventory="inventory.yml", limit="", started_at="2025-01-01T00:00:00+00:00",
        hosts=entries,
    ).save(fleet_dir)  # fmt: skip
    return fleet_dir
