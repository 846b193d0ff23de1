"""Nothing lost, nothing overwritten, nothing written elsewhere: the result store via the CLI.

Bare metal only (fast); the store does not depend on the runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.analysis import load_run
from tests.e2e import reliability as rel
from tests.helpers import REPO, bench, require_root

SLEEP_1S = ["/bin/busybox", "sleep", "1"]


@pytest.fixture
def bare_only() -> None:
    require_root()


def _tree_digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_resume_finishes_without_redoing_finished_trials(bare_only: None, tmp_path: Path) -> None:
    scenario = rel.scenario_file(tmp_path, ["bare"], [("sleep", SLEEP_1S)], repetitions=5)
    started = rel.start_run(scenario, tmp_path / "results", "resumable")
    rel.wait_for_trials(started.run_dir, 2, timeout_s=60)
    started.process.send_signal(signal.SIGINT)
    started.process.wait(timeout=20)
    assert started.process.returncode == 1, started.stderr()
    before = load_run(started.run_dir)
    assert before.manifest.status == "incomplete"
    done = set(before.trials["trial_id"])
    assert 2 <= len(done) < 5
    outputs = {t: (started.run_dir / "trials" / t / "stdout.txt").stat().st_mtime_ns for t in done}

    resumed = bench("run", str(scenario), "--resume", str(started.run_dir), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "complete"
    after = load_run(started.run_dir)
    assert len(after.trials) == 5 and after.trials["trial_id"].is_unique
    assert set(after.trials["status"]) == {"ok"}
    # The finished trials were not run again: same rows, same output files, same samples.
    kept = after.trials[after.trials["trial_id"].isin(done)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.trials.reset_index(drop=True), check_dtype=False)
    for trial_id, mtime_ns in outputs.items():
        assert (started.run_dir / "trials" / trial_id / "stdout.txt").stat().st_mtime_ns == mtime_ns
    old_samples = before.samples.reset_index(drop=True)
    new_samples = after.samples[after.samples["trial_id"].isin(done)].reset_index(drop=True)
    pd.testing.assert_frame_equal(new_samples, old_samples, check_dtype=False)
    assert set(after.samples["trial_id"]) == set(after.trials["trial_id"])


def test_resume_with_another_scenario_is_refused(bare_only: None, tmp_path: Path) -> None:
    scenario = rel.scenario_file(tmp_path, ["bare"], [("true", ["/bin/true"])])
    first = bench("run", str(scenario), "--results-dir", str(tmp_path / "r"), "--run-id", "a")
    assert first.returncode == 0, first.stderr
    scenario.write_text(scenario.read_text().replace("repetitions = 1", "repetitions = 2"))
    again = bench("run", str(scenario), "--resume", str(tmp_path / "r" / "a"))
    assert again.returncode == 2, again.stderr
    assert "same scenario file" in again.stderr and "Traceback" not in again.stderr


def test_existing_run_dir_is_never_overwritten(bare_only: None, tmp_path: Path) -> None:
    scenario = rel.scenario_file(tmp_path, ["bare"], [("true", ["/bin/true"])])
    args = ("run", str(scenario), "--results-dir", str(tmp_path / "r"), "--run-id", "once")
    assert bench(*args).returncode == 0
    before = _tree_digest(tmp_path / "r")
    again = bench(*args)
    assert again.returncode == 2, again.stderr
    assert "never overwrites" in again.stderr and "Traceback" not in again.stderr
    assert _tree_digest(tmp_path / "r") == before


@pytest.mark.parametrize(
    "run_id", ["a/b", "..", ".", "../escape", "with space", "/abs", "-flag", "x" * 200, "a\nb"]
)
def test_hostile_run_ids_are_refused(bare_only: None, tmp_path: Path, run_id: str) -> None:
    scenario = rel.scenario_file(tmp_path, ["bare"], [("true", ["/bin/true"])])
    results = tmp_path / "work" / "results"
    done = bench("run", str(scenario), "--results-dir", str(results), "--run-id", run_id)
    assert done.returncode == 2, done.stderr
    assert "is not allowed" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "work").exists()  # not even the results dir was created


def test_nothing_is_written_outside_the_results_dir(bare_only: None, tmp_path: Path) -> None:
    """A run from an empty working directory writes only under --results-dir."""
    scenario = rel.scenario_file(tmp_path, ["bare"], [("true", ["/bin/true"])], repetitions=2)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    results = tmp_path / "results"
    repo_status = _git_status()
    outside_before = _tree_digest(tmp_path)
    started = time.time()
    done = bench("run", str(scenario), "--results-dir", str(results), "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    run_dir = Path(json.loads(done.stdout)["run_dir"])
    assert run_dir.resolve().parent == results.resolve()
    assert list(cwd.iterdir()) == []
    outside_after = {k: v for k, v in _tree_digest(tmp_path).items() if not k.startswith("results")}
    assert outside_after == outside_before
    assert _git_status() == repo_status
    # Every file of the run is inside the run folder, and was written by this run.
    assert all(p.stat().st_mtime >= started - 1 for p in run_dir.rglob("*"))
    assert os.listdir(results) == [run_dir.name]


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "results", "reports"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
