"""Write valid synthetic result stores with known, injected effects (for analysis tests).

The layout follows DESIGN.md "Result store": manifest.json, trials.parquet, samples.parquet.
Values are realistic in size; noise is multiplicative Gaussian so the true ratio of medians
between two runtimes is exactly the injected factor.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MiB = 1 << 20
BASE_THROUGHPUT = {"cpu": 1200.0, "vm": 350.0, "fork": 9000.0, "io": 80.0}


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
    trial_duration_s: float = 5.0
    sample_hz: float = 10.0
    failed: int = 0  # this many extra failed trials per runtime (must be ignored)
    host_load_before: float = 0.05
    cpus: int = 2
    seed: int = 0
    omit_columns: tuple[str, ...] = ()  # simulate an older/partial writer


def _samples(
    rng: np.random.Generator,
    trial_id: str,
    duration_s: float,
    hz: float,
    cpu_cores: float,
    mem_peak: int,
) -> pd.DataFrame:
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
    return pd.DataFrame(
        {
            "trial_id": trial_id,
            "t_s": t,
            "cpu_usage_ns": cpu_ns,
            "cpu_user_ns": (cpu_ns * 0.9).astype(np.int64),
            "cpu_system_ns": (cpu_ns * 0.1).astype(np.int64),
            "cpu_nr_throttled": np.zeros(n, dtype=np.int64),
            "cpu_throttled_ns": np.zeros(n, dtype=np.int64),
            "mem_current_bytes": mem,
            "mem_peak_bytes": np.maximum.accumulate(mem),
            "mem_anon_bytes": (mem * 0.8).astype(np.int64),
            "mem_file_bytes": (mem * 0.2).astype(np.int64),
            "mem_working_set_bytes": (mem * 0.9).astype(np.int64),
            "pids_current": np.full(n, 2, dtype=np.int64),
            "oom_kill_count": np.zeros(n, dtype=np.int64),
            "io_read_bytes": io,
            "io_write_bytes": io // 2,
        }
    )


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
) -> dict[str, Any]:
    noise = 1 + spec.noise * rng.standard_normal()
    factor = spec.throughput_factor.get(runtime, 1.0)
    throughput = BASE_THROUGHPUT.get(workload, 500.0) * factor * throughput_scale * noise
    wall = spec.trial_duration_s * (1 + 0.002 * rng.standard_normal())
    cpu = wall * spec.cpu_factor.get(runtime, 1.0) * (1 + spec.noise * rng.standard_normal())
    mem = mem_peak_bytes or int(
        (64 * MiB + spec.mem_extra_bytes.get(runtime, 0)) * (1 + 0.01 * rng.standard_normal())
    )
    return {
        "trial_id": trial_id,
        "runtime": runtime,
        "oci_runtime": "runc" if runtime in ("docker", "podman") else "",
        "workload": workload,
        "role": role,
        "group_id": group_id,
        "repetition": repetition,
        "warmup": warmup,
        "status": status,
        "exit_code": 0 if status == "ok" else (137 if status == "oom" else 1),
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_user_s": cpu * 0.9,
        "cpu_sys_s": cpu * 0.1,
        "cpu_rusage_s": cpu if runtime == "bare" else np.nan,
        "mem_peak_bytes": mem,
        "mem_peak_from_samples": False,
        "oom_kills": oom_kills,
        "cpu_nr_throttled": 0,
        "cpu_throttled_ns": 0,
        "throughput": throughput if status == "ok" else np.nan,
        "throughput_unit": "bogo-ops/s",
        "start_s": spec.start_s.get(runtime, 0.3) * (1 + 0.05 * rng.standard_normal()),
        "stop_s": spec.stop_s.get(runtime, 0.2) * (1 + 0.05 * rng.standard_normal()),
        "runtime_rss_bytes": 0 if runtime == "bare" else 40 * MiB,
        "runtime_pss_bytes": 0 if runtime == "bare" else 30 * MiB,
        "cgroup": f"/sys/fs/cgroup/bench-{trial_id}",
        "error": "" if status == "ok" else "synthetic failure",
        "scenario_isolation_kind": kind,
        "placement": placement,
        # Not yet in DESIGN's column list: the limit the trial ran under (isolation checks).
        "mem_limit_bytes": mem_limit_bytes,
    }


def build_frames(spec: StoreSpec) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The manifest, trials and samples of a synthetic run."""
    rng = np.random.default_rng(spec.seed)
    rows: list[dict[str, Any]] = []
    counter = 0

    def next_id() -> str:
        nonlocal counter
        counter += 1
        return f"t{counter:05d}"

    total = spec.warmups + spec.repetitions
    for rep in range(total):
        warm = rep < spec.warmups
        for workload in spec.workloads:
            for runtime in spec.runtimes:  # interleaved A B C D A B C D
                tid = next_id()
                rows.append(
                    _trial(
                        spec,
                        rng,
                        trial_id=tid,
                        runtime=runtime,
                        workload=workload,
                        role="solo",
                        group_id=f"g-{tid}",
                        repetition=rep,
                        warmup=warm,
                    )
                )
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
            tid = next_id()
            rows.append(
                _trial(
                    spec,
                    rng,
                    trial_id=tid,
                    runtime=runtime,
                    workload=spec.workloads[0],
                    role="solo",
                    group_id=f"g-{tid}",
                    repetition=total,
                    warmup=False,
                    status="failed",
                )
            )
    trials = pd.DataFrame(rows)
    trials = trials.drop(columns=[c for c in spec.omit_columns if c in trials.columns])

    sample_frames = [
        _samples(
            rng,
            str(row.trial_id),
            spec.trial_duration_s,
            spec.sample_hz,
            float(row.cpu_s) / float(row.wall_s),
            int(row.mem_peak_bytes),
        )
        for row in trials.itertuples()
        if row.status == "ok" or row.role == "aggressor"
    ]
    samples = pd.concat(sample_frames, ignore_index=True)
    manifest = {
        "run_id": spec.run_id,
        "status": "complete",
        "scenario": {
            "name": "synthetic",
            "path": "scenarios/synthetic.toml",
            "sha256": hashlib.sha256(spec.run_id.encode()).hexdigest(),
        },
        "started_at": "2025-01-01T00:00:00+00:00",
        "ended_at": "2025-01-01T00:30:00+00:00",
        "host": {
            "hostname": "bench-host",
            "kernel": "6.1.0-synthetic",
            "cpu_model": "Synthetic CPU @ 3.0GHz",
            "cpus": spec.cpus,
            "memory_bytes": 8 << 30,
            "cgroup_version": "v2",
        },
        "runtimes": {
            r: {"available": True, "version": "" if r == "bare" else f"{r} 1.0", "reason": ""}
            for r in spec.runtimes
        },
        "image": {"digest": "sha256:" + "0" * 64, "binaries": {"/usr/bin/stress-ng": "ab" * 32}},
        "bench_version": "0.1.0",
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "host_load_before": spec.host_load_before,
    }
    return manifest, trials, samples


def write_store(root: Path, spec: StoreSpec | None = None) -> Path:
    """Write results/<run-id>/ under root and return that directory."""
    spec = spec or StoreSpec()
    manifest, trials, samples = build_frames(spec)
    run_dir = root / spec.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    samples.to_parquet(run_dir / "samples.parquet", index=False)
    return run_dir
