"""The result store: one folder per run, written atomically, never overwritten."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench.cgroups.model import SNAPSHOT_FIELDS
from bench.errors import InputError
from bench.host import HostFacts

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pydantic

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def samples_table(trial_id: str, columns: SampleColumns) -> pa.Table:
    """Samples of one trial in long format; metrics not read are nulls (<NA> in pandas)."""
    import numpy as np
    import pyarrow as pa

    from bench.sampler import MISSING

    arrays = [
        pa.array([trial_id] * len(columns), pa.string()),
        pa.array(np.frombuffer(columns.t_s, dtype=np.float64)),
    ]
    for name in SNAPSHOT_FIELDS:
        values = np.frombuffer(columns.values[name], dtype=np.int64)
        arrays.append(pa.array(values, mask=values == MISSING))
    return pa.Table.from_arrays(arrays, schema=_samples_schema())


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

    def add_trial(self, result: TrialResult, samples: SampleColumns | None) -> None:
        """Persist one finished trial: its samples first, then the trials table."""
        self.add_trials([(result, samples)])

    def add_trials(self, results: list[tuple[TrialResult, SampleColumns | None]]) -> None:
        """Persist finished trials: their samples first, then the trials table once."""
        for result, samples in results:
            if samples is not None and len(samples):
                table = samples_table(result.trial_id, samples)
                _write_parquet(table, self.run_dir / SAMPLE_PARTS / f"{result.trial_id}.parquet")
        redone = {result.trial_id for result, _ in results}
        self.trials = [t for t in self.trials if t.trial_id not in redone]
        self.trials += [result for result, _ in results]
        self._write_trials()

    def done_trial_ids(self) -> set[str]:
        return {t.trial_id for t in self.trials if t.status != "skipped"}

    def _write_trials(self) -> None:
        import pyarrow as pa

        columns = {name: [getattr(t, name) for t in self.trials] for name in _TRIAL_COLUMNS}
        _write_parquet(
            pa.Table.from_pydict(columns, schema=_trials_schema()), self.run_dir / TRIALS
        )

    def finish(self) -> None:
        """End of a run, also an interrupted one: samples merged, a trials table present
        (empty when no trial finished), so the folder always loads."""
        self.consolidate_samples()
        if not (self.run_dir / TRIALS).exists():
            self._write_trials()

    def consolidate_samples(self) -> None:
        """Merge per-trial sample parts into samples.parquet (parts kept until it is written)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = sorted((self.run_dir / SAMPLE_PARTS).glob("*.parquet"))
        tables = [pq.read_table(p, schema=_samples_schema()) for p in parts]
        if (self.run_dir / SAMPLES).exists():  # a resumed run: keep the earlier trials' samples
            earlier = pq.read_table(self.run_dir / SAMPLES, schema=_samples_schema())
            redone = pa.array([p.stem for p in parts], pa.string())
            tables.insert(0, earlier.filter(pc.invert(pc.is_in(earlier["trial_id"], redone))))
        table = pa.concat_tables(tables) if tables else _samples_schema().empty_table()
        _write_parquet(table, self.run_dir / SAMPLES)
        for part in parts:
            part.unlink()
        (self.run_dir / SAMPLE_PARTS).rmdir()


_TRIAL_COLUMNS = list(TrialResult.__dataclass_fields__)


@functools.cache
def _samples_schema() -> pa.Schema:
    """trial_id, t_s, one int64 column per metric; pandas reads the metrics as Int64."""
    return _schema_with_pandas_dtypes(
        {"trial_id": "", "t_s": 0.0, **dict.fromkeys(SNAPSHOT_FIELDS, 0)}, set(SNAPSHOT_FIELDS)
    )


@functools.cache
def _trials_schema() -> pa.Schema:
    """One column per TrialResult field; integers nullable (Int64), so None stays missing."""
    example: dict[str, object] = {}
    for name, spec in TrialResult.__dataclass_fields__.items():
        kind = str(spec.type).split(" ")[0]
        example[name] = {"int": 0, "float": 0.0, "bool": False}.get(kind, "")
    ints = {name for name, value in example.items() if type(value) is int}
    return _schema_with_pandas_dtypes(example, ints)


def _schema_with_pandas_dtypes(example: dict[str, object], ints: set[str]) -> pa.Schema:
    """The Arrow schema of a one-row frame like `example`, `ints` as pandas Int64.

    Written with pandas' metadata, so pd.read_parquet gives back Int64 (not float64 when a
    value is missing) without pandas in the write path.
    """
    import pandas as pd
    import pyarrow as pa

    frame = pd.DataFrame({k: [v] for k, v in example.items()})
    frame = frame.astype(dict.fromkeys(ints, "Int64"))
    return pa.Schema.from_pandas(frame, preserve_index=False)


def _write_parquet(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _read_trial_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / TRIALS
    if not path.exists():
        return []
    frame = read_trials(path)
    frame = frame.astype(object).where(frame.notna(), None)
    return [{str(k): v for k, v in record.items()} for record in frame.to_dict(orient="records")]


# Columns a trials table cannot do without; any other column missing (a store written
# before it existed) takes TrialResult's default, or the value below for fields without one.
REQUIRED_TRIAL_COLUMNS = ("trial_id", "runtime", "workload")
_OLDER_STORE_DEFAULTS: dict[str, object] = {
    "oci_runtime": "",
    "role": "solo",
    "group_id": "",
    "repetition": 0,
    "warmup": False,
    "status": "ok",
}


def read_trials(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """trials.parquet as pandas in the store's dtypes; InputError naming what is wrong.

    `columns` (with the required ones) keeps only those: a year of nightly runs is read
    several times faster when only the columns a history needs are converted."""
    import pyarrow as pa

    fields = TrialResult.__dataclass_fields__.values()
    defaults = {f.name: f.default for f in fields if f.default is not MISSING}
    defaults |= _OLDER_STORE_DEFAULTS
    schema = _trials_schema()
    if columns is not None:
        wanted = {*REQUIRED_TRIAL_COLUMNS, *columns}
        schema = pa.schema([spec for spec in schema if spec.name in wanted])
    table = _read_parquet(path, None if columns is None else schema.names)
    frame: pd.DataFrame = _conform(
        table, schema, REQUIRED_TRIAL_COLUMNS, defaults, path
    ).to_pandas()
    return frame


def read_samples(path: Path) -> pd.DataFrame:
    """samples.parquet as pandas: trial_id, t_s and every metric column (Int64, <NA> unread)."""
    table = _conform(_read_parquet(path), _samples_schema(), ("trial_id", "t_s"), {}, path)
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _read_parquet(path: Path, columns: Iterable[str] | None = None) -> pa.Table:
    """The table at `path`; with `columns`, only those of them it has (others not decoded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if columns is None:
            return pq.read_table(path)
        parquet = pq.ParquetFile(path)
        wanted = set(columns)
        return parquet.read(columns=[n for n in parquet.schema_arrow.names if n in wanted])
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"{path} is not a readable Parquet table ({exc}); it was not written by bench "
            "or is damaged. Rerun the scenario, or remove this run directory."
        ) from None


def _conform(
    table: pa.Table,
    schema: pa.Schema,
    required: tuple[str, ...],
    defaults: dict[str, object],
    path: Path,
) -> pa.Table:
    """`table` in `schema`'s columns and types: missing optional columns filled with their
    default, nulls in text and flag columns with the default too, other columns dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise InputError(
            f"{path} lacks required column(s) {', '.join(missing)}; it was not written by "
            "a compatible bench version."
        )
    arrays = []
    for spec in schema:
        default = defaults.get(spec.name)
        if spec.name not in table.column_names:
            arrays.append(pa.array([default] * len(table), spec.type))
            continue
        try:
            column = table[spec.name].cast(spec.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(
                f"{path}: column {spec.name!r} holds {table.schema.field(spec.name).type}, "
                f"bench writes {spec.type} ({exc}); it was not written by a compatible bench."
            ) from None
        if default is not None and not _is_number(spec.type):
            column = pc.fill_null(column, pa.scalar(default, spec.type))
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def _is_number(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


@functools.cache
def _manifest_adapter() -> pydantic.TypeAdapter[Manifest]:
    import pydantic

    return pydantic.TypeAdapter(Manifest)
