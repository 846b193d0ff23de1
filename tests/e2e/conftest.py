"""E2E fixtures: real small runs made once per session with the `bench` command itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import (
    TINY_SCENARIO,
    RealRun,
    bench,
    docker_answers,
    require,
    require_root,
)

RUN_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def tiny_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny scenario file: bare, plus docker when its daemon answers."""
    require_root()
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    runtimes = ["bare", "docker"] if docker_answers() else ["bare"]
    path = tmp_path_factory.mktemp("bench-e2e-scenario") / "tiny.toml"
    path.write_text(TINY_SCENARIO.format(runtimes=json.dumps(runtimes)))
    return path


def _run_tiny(scenario: Path, results_dir: Path) -> RealRun:
    done = bench(
        "run", str(scenario), "--results-dir", str(results_dir), "--json", timeout_s=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, f"bench run failed ({done.returncode}):\n{done.stderr}"
    out = json.loads(done.stdout)
    assert out["status"] == "complete", out
    run_dir = Path(out["run_dir"])
    trials = pd.read_parquet(run_dir / "trials.parquet")
    # "complete" also covers trials skipped because a daemon went away mid-run: the tests
    # need every runtime measured, so say which one was lost instead of failing later.
    bad = trials[trials["status"] != "ok"]
    assert bad.empty, (
        "trials did not finish ok:\n" + bad[["trial_id", "status", "error"]].to_string()
    )
    runtimes = tuple(dict.fromkeys(trials["runtime"]))
    return RealRun(run_dir, str(out["run_id"]), runtimes, scenario)


@pytest.fixture(scope="session")
def real_run(tiny_scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """One real run of the tiny scenario (shared by every e2e test that only reads it)."""
    return _run_tiny(tiny_scenario, tmp_path_factory.mktemp("bench-e2e-results"))


@pytest.fixture(scope="session")
def real_rerun(tiny_scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """A second, independent run of the same scenario (for run-vs-rerun comparisons)."""
    return _run_tiny(tiny_scenario, tmp_path_factory.mktemp("bench-e2e-rerun"))
