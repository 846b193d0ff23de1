"""The result store: one folder per run, written atomically, never overwritten."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from bench.sampler import SampleColumns

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
    error: str = ""
    output_tail: str = ""


@dataclass
class Manifest:
    """manifest.json: what ran, where, with which versions, and how it ended."""

    run_id: str
    status: RunStatus
    scenario: dict[str, str]
    started_at: str
    ended_at: str | None = None
    host: dict[str, Any] = field(default_factory=dict)
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)
    image: dict[str, Any] = field(default_factory=dict)
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


def check_run_id(run_id: str) -> str:
    """Run ids become directory names: letters, digits, '-', '_', '.' only."""
    if not RUN_ID_RE.match(run_id) or run_id in {".", ".."}:
        raise InputError(
            f"run id {run_id!r} is not allowed: use letters, digits, '-', '_' and '.' "
            "(at most 101 characters, not starting with a punctuation mark)"
        )
    return run_id


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def samples_frame(trial_id: str, columns: SampleColumns) -> pd.DataFrame:
    """Samples of one trial as a long-format DataFrame (missing metrics as <NA>)."""
    import pandas as pd

    from bench.sampler import MISSING

    frame = pd.DataFrame({"trial_id": trial_id, "t_s": columns.t_s.tolist()})
    for name, column in columns.values.items():
        series = pd.Series(column.tolist(), dtype="Int64")
        frame[name] = series.mask(series == MISSING)
    return frame


class ResultStore:
    """Writes results/<run-id>/: the manifest and trials after every trial, samples per trial."""

    def __init__(self, run_dir: Path, *, resume: bool = False) -> None:
        self.run_dir = run_dir
        self.trials: list[TrialResult] = []
        if resume:
            if not (run_dir / MANIFEST).exists():
                raise InputError(f"{run_dir} holds no bench run to resume (no {MANIFEST})")
            self.trials = [TrialResult(**row) for row in _read_trial_rows(run_dir)]
        else:
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                raise InputError(
                    f"{run_dir} already exists; bench never overwrites a run. "
                    "Choose another --run-id, or resume it with --resume."
                ) from None
        (run_dir / SAMPLE_PARTS).mkdir(exist_ok=True)
        (run_dir / "trials").mkdir(exist_ok=True)

    def trial_dir(self, trial_id: str) -> Path:
        path = self.run_dir / "trials" / trial_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_manifest(self, manifest: Manifest) -> None:
        data = json.dumps(asdict(manifest), indent=2, sort_keys=True, default=str)
        atomic_write_bytes(self.run_dir / MANIFEST, data.encode() + b"\n")

    def add_trial(self, result: TrialResult, samples: pd.DataFrame | None) -> None:
        """Persist one finished trial: its samples first, then the trials table."""
        if samples is not None and len(samples):
            _write_parquet(samples, self.run_dir / SAMPLE_PARTS / f"{result.trial_id}.parquet")
        self.trials = [t for t in self.trials if t.trial_id != result.trial_id] + [result]
        self._write_trials()

    def done_trial_ids(self) -> set[str]:
        return {t.trial_id for t in self.trials if t.status != "skipped"}

    def _write_trials(self) -> None:
        import pandas as pd

        frame = pd.DataFrame([asdict(t) for t in self.trials], columns=_TRIAL_COLUMNS)
        # Nullable integers: a missing exit code must not turn the column into floats.
        frame = frame.astype({name: "Int64" for name in _INT_COLUMNS})
        _write_parquet(frame, self.run_dir / TRIALS)

    def finish(self) -> None:
        """End of a run, also an interrupted one: samples merged, a trials table present
        (empty when no trial finished), so the folder always loads."""
        self.consolidate_samples()
        if not (self.run_dir / TRIALS).exists():
            self._write_trials()

    def consolidate_samples(self) -> None:
        """Merge per-trial sample parts into samples.parquet (parts kept until it is written)."""
        import pandas as pd

        parts = sorted((self.run_dir / SAMPLE_PARTS).glob("*.parquet"))
        frames = [pd.read_parquet(p) for p in parts]
        if (self.run_dir / SAMPLES).exists():  # a resumed run: keep the earlier trials' samples
            earlier = pd.read_parquet(self.run_dir / SAMPLES)
            frames.insert(0, earlier[~earlier["trial_id"].isin({p.stem for p in parts})])
        frames = [f for f in frames if len(f)]
        frame = pd.concat(frames, ignore_index=True) if frames else _empty_samples()
        _write_parquet(frame, self.run_dir / SAMPLES)
        for part in parts:
            part.unlink()
        (self.run_dir / SAMPLE_PARTS).rmdir()


_TRIAL_COLUMNS = list(TrialResult.__dataclass_fields__)
_INT_COLUMNS = [
    name for name, f in TrialResult.__dataclass_fields__.items() if str(f.type).startswith("int")
]


def _empty_samples() -> pd.DataFrame:
    import pandas as pd

    from bench.cgroups.model import SNAPSHOT_FIELDS

    return pd.DataFrame(columns=["trial_id", "t_s", *SNAPSHOT_FIELDS])


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _read_trial_rows(run_dir: Path) -> list[dict[str, Any]]:
    import pandas as pd

    path = run_dir / TRIALS
    if not path.exists():
        return []
    frame = pd.read_parquet(path)
    frame = frame.astype(object).where(frame.notna(), None)
    return [
        {k: v for k, v in record.items() if k in _TRIAL_COLUMNS}
        for record in frame.to_dict(orient="records")
    ]


def load_run_files(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Read a run folder (complete or not): manifest, trials and samples."""
    import pandas as pd

    if not (run_dir / MANIFEST).exists():
        raise InputError(f"{run_dir} is not a bench run folder (no {MANIFEST})")
    manifest = json.loads((run_dir / MANIFEST).read_text())
    trials = (
        pd.read_parquet(run_dir / TRIALS)
        if (run_dir / TRIALS).exists()
        else pd.DataFrame(columns=_TRIAL_COLUMNS)
    )
    if (run_dir / SAMPLES).exists():
        samples = pd.read_parquet(run_dir / SAMPLES)
    else:
        parts = sorted((run_dir / SAMPLE_PARTS).glob("*.parquet"))
        samples = (
            pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
            if parts
            else _empty_samples()
        )
    return manifest, trials, samples
