"""Mistakes in a scenario or a result directory: exit 2 before anything runs or is written.

Each case used to run and fail trial by trial (or crash with "internal error"); now
`bench run`, `bench report` and `bench compare` name the file, line and field, and leave
no results/<run-id>/ or report directory behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.preflight import host_limits
from tests.helpers import bench, require
from tests.storegen import StoreSpec, write_store

SCENARIO = """\
name = "preflight"
runtimes = ["bare"]
repetitions = 1
warmups = 0

[limits]
{limits}

[[workloads]]
name = "spin"
stressor = "cpu"
workers = 1
duration_s = 1
options = {{ {options} }}
"""
GOOD_LIMITS = 'memory = "256m"\npids = 64'
GOOD_OPTIONS = 'cpu-method = "matrixprod"'


def run_refused(tmp_path: Path, limits: str, options: str = GOOD_OPTIONS) -> str:
    """`bench run` of the scenario: exit 2, no traceback, no results; returns stderr."""
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    (tmp_path / "s.toml").write_text(SCENARIO.format(limits=limits, options=options))
    results = tmp_path / "results"
    done = bench("run", "s.toml", "--results-dir", str(results), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "internal error" not in done.stderr
    assert not results.exists(), list(results.rglob("*"))
    return done.stderr


def test_cpuset_this_host_does_not_have(tmp_path: Path) -> None:
    absent = max(host_limits().cpus) + 1
    stderr = run_refused(tmp_path, f'cpuset = "0,{absent}"\n{GOOD_LIMITS}')
    assert f"s.toml:7: limits.cpuset: this host has no CPU {absent} (its CPUs: " in stderr


def test_stress_ng_rejects_a_method_name(tmp_path: Path) -> None:
    stderr = run_refused(tmp_path, GOOD_LIMITS, 'cpu-method = "no-such-method"')
    assert "s.toml:15: workloads[0].options.cpu-method: stress-ng rejects these options:" in stderr
    assert "cpu-method must be one of:" in stderr and "matrixprod" in stderr  # stress-ng's own


def test_stress_ng_rejects_an_option_value(tmp_path: Path) -> None:
    stderr = run_refused(tmp_path, GOOD_LIMITS, "cpu-load = 300")
    assert "s.toml:15: workloads[0].options.cpu-load:" in stderr
    assert "out of range for cpu-load" in stderr


def test_memory_limit_above_host_memory(tmp_path: Path) -> None:
    too_much = 2 * host_limits().memory_bytes
    stderr = run_refused(tmp_path, f"memory = {too_much}\npids = 64")
    assert "s.toml:7: limits.memory:" in stderr and "more than this host's memory" in stderr


def test_pids_limit_too_small_to_start(tmp_path: Path) -> None:
    stderr = run_refused(tmp_path, 'memory = "256m"\npids = 2')
    assert "s.toml:8: limits.pids: 2 processes are too few for workload 'spin'" in stderr


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "results"
    base = write_store(root, StoreSpec(run_id="base", trial_duration_s=1.0, sample_hz=5.0))
    new = write_store(root, StoreSpec(run_id="new", seed=1, trial_duration_s=1.0, sample_hz=5.0))
    return base, new


def test_report_of_a_damaged_trials_table(tmp_path: Path, stores: tuple[Path, Path]) -> None:
    base, _ = stores
    trials = base / "trials.parquet"
    trials.write_bytes(trials.read_bytes()[:100])
    out = tmp_path / "report"
    done = bench("report", str(base), "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert f"{trials} is not a readable Parquet table" in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_report_of_a_manifest_with_a_wrong_field(tmp_path: Path, stores: tuple[Path, Path]) -> None:
    base, _ = stores
    manifest = json.loads((base / "manifest.json").read_text())
    manifest["status"] = "finished"
    (base / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "report"
    done = bench("report", str(base), "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert f"{base / 'manifest.json'}, field 'status': Input should be" in done.stderr
    assert not out.exists()


def test_compare_with_a_directory_that_is_not_a_run(
    tmp_path: Path, stores: tuple[Path, Path]
) -> None:
    base, _ = stores
    other = tmp_path / "photos"
    other.mkdir()
    done = bench("compare", str(base), str(other))
    assert done.returncode == 2, done.stderr
    assert f"{other} is not a bench result directory: manifest.json is missing" in done.stderr
    assert "Traceback" not in done.stderr


def test_compare_with_damaged_samples(stores: tuple[Path, Path]) -> None:
    base, new = stores
    samples = new / "samples.parquet"
    samples.write_bytes(b"PAR1 not really")
    done = bench("compare", str(base), str(new))
    assert done.returncode == 2, done.stderr
    assert f"{samples} is not a readable Parquet table" in done.stderr
