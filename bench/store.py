"""The result store: one folder per run, written atomically, never overwritten.

Its Parquet schemas are derived once from TrialResult and the cgroup snapshot fields, and
every reader (bench.frames, resume) goes through read_trials and read_samples.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cgroups.model import SNAPSHOT_FIELDS
from bench.errors import InputError
from bench.results import MANIFEST, SAMPLE_PARTS, SAMPLES, TRIALS, Manifest, TrialResult

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from bench.sampler import SampleColumns


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
